"""The start of every crash-drill process: reconcile, report, then wait to be let loose.

Imported by the drill runners, which run as separate processes (a sibling
module on their ``sys.path``).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from breakglass.bootstrap import bootstrap
from breakglass.service import crashpoints
from breakglass.service.broker import Broker
from breakglass.settings import Settings


def reconciled_broker(catalog: str, db: str, state: Path, horizon: timedelta) -> Broker | None:
    """Finish what a killed predecessor left, print ``reconciled``, wait for ``go``.

    The crash point (``BREAKGLASS_CRASH_AT``) is armed only after that, so the
    reconciliation itself is never interrupted. ``None`` means: stop now.
    """
    crash_at = os.environ.pop("BREAKGLASS_CRASH_AT", None)
    env = {**os.environ, "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"}
    container = bootstrap(Settings.from_env(catalog, db_url=db, dev=True, state_dir=state,
                                            env=env), migrate=False)
    broker = container.broker
    broker.recover(timedelta(0))  # this process is the only broker: nothing is in flight
    while broker.expire_due():
        pass
    deadline = broker.next_deadline()
    while deadline is not None and deadline <= datetime.now(UTC) + horizon:
        time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)
        broker.expire_due()
        deadline = broker.next_deadline()
    print("reconciled", flush=True)
    if sys.stdin.readline().strip() != "go":
        return None
    crashpoints.arm(crash_at)
    return broker
