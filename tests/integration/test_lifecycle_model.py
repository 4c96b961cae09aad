"""The lifecycle model (tests/integration/lifecycle_model.py) on both stores.

Bounded in CI: ``BG_FSM_EXAMPLES`` examples (default 25) of ``BG_FSM_STEPS`` steps
(default 30), derandomized so every run tries the same interleavings; ``make fuzz``
runs it longer.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from breakglass.catalog.loader import LoadedCatalog
from tests.integration.lifecycle_model import EXPLORED, LifecycleModel
from tests.integration.lifecycle_stores import stores

EXAMPLES = int(os.environ.get("BG_FSM_EXAMPLES", "25"))
STEPS = int(os.environ.get("BG_FSM_STEPS", "30"))


@pytest.mark.timeout(max(300, EXAMPLES * STEPS))
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_lifecycle_keeps_its_invariants_under_any_interleaving(
        store: str, tmp_path: Path, loaded: LoadedCatalog) -> None:
    with stores(store, tmp_path) as factory:
        machine = type("Lifecycle", (LifecycleModel,), {"stores": factory, "loaded": loaded})
        run_state_machine_as_test(machine, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, derandomize=True,
            database=None, deadline=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print("\n".join(f"{n:6} {what}" for what, n in sorted(EXPLORED.items())))

