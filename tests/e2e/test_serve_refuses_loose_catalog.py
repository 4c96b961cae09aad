"""``breakglass serve`` refuses a loosened catalog, naming every violated rule, before any
state exists; warnings do not stop it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLEAN = Path(__file__).parent.parent / "fixtures" / "lint" / "clean.yaml"
BIN = Path(sys.executable).parent / "breakglass"
C_BLOCK = "    approvals: 2\n    approvers_outside_team: true\n    extension_approvals: 2"


def serve(catalog: Path, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BREAKGLASS_STATE_DIR": str(state),
           "BREAKGLASS_ANCHOR_IN_STATE_DIR": "1"}
    return subprocess.run([str(BIN), "serve", "--catalog", str(catalog), "--db",
                           f"sqlite:///{state / 'broker.db'}", "--dev", "--port", "9"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_serve_refuses_a_loosened_zone_c_naming_each_rule(tmp_path):
    catalog = tmp_path / "loose.yaml"
    catalog.write_text(CLEAN.read_text().replace(
        C_BLOCK, "    approvals: 1\n    approvers_outside_team: false\n"
        "    extension_approvals: 1\n    require_mfa: false"))
    out = serve(catalog, tmp_path / "state")
    assert out.returncode == 2, out.stderr
    for rule in ("zone.c.approvals", "zone.c.outside_team", "zone.c.mfa",
                 "zone.c.extension_approvals"):
        assert f"[{rule}]" in out.stderr
    assert not (tmp_path / "state" / "broker.db").exists()
