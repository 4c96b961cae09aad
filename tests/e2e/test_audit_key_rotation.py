"""An operator rotates the audit signing key of a running deployment, as the docs say."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx

from tests.conftest import CATALOG
from tests.e2e.conftest import BIN, Cli, free_port, run_broker


def activate(cli: Cli, incident: str) -> None:
    assert cli.run("uma", "login", "--dev", "uma").returncode == 0
    result = cli.run("uma", "request", "embeddings-read", "--incident", incident,
                     "--reason", "recovery", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "active"


def test_a_rotated_key_keeps_the_whole_log_verifiable(tmp_path: Path, target_dsn: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    env = {"TEST_TARGET_DSN": target_dsn}
    with run_broker(CATALOG, state, env) as url:
        activate(Cli(url, tmp_path / "before"), "SEV-4100")
        retired = httpx.get(url + "/v1/audit/key").text

    def key(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), "audit", "key", "--catalog", str(CATALOG), *args],
                              env={**os.environ, **env, "BREAKGLASS_STATE_DIR": str(state)},
                              capture_output=True, text=True, timeout=60, check=False)

    assert key().stdout == retired  # what the server published, without the server
    (state / "audit.key").rename(tmp_path / "retired.key")  # a new key is made at the next start
    missing = key()
    assert missing.returncode != 0
    assert "no checkpoint key there" in missing.stderr
    assert not (state / "audit.key").exists()
    assert key("--key-file", str(tmp_path / "retired.key")).stdout == retired

    refused = subprocess.run(
        [str(BIN), "serve", "--catalog", str(CATALOG), "--dev", "--port", str(free_port()),
         "--db", f"sqlite:///{state / 'broker.db'}"],
        env={**os.environ, **env, "BREAKGLASS_STATE_DIR": str(state),
             "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"},
        capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0
    assert "BREAKGLASS_AUDIT_PREVIOUS_KEYS" in refused.stdout + refused.stderr

    with run_broker(CATALOG, state, {**env, "BREAKGLASS_AUDIT_PREVIOUS_KEYS": retired}) as url:
        cli = Cli(url, tmp_path / "after")
        activate(cli, "SEV-4101")
        keys = httpx.get(url + "/v1/audit/key").text.splitlines()
        assert len(keys) == 2
        assert keys[1] == retired.strip()
        verified = cli.run("uma", "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "verified" in verified.stdout
        new_key_only = cli.run("uma", "audit", "verify", "--key", keys[0])
        assert new_key_only.returncode == 1
        assert "checkpoint_invalid" in new_key_only.stdout

    # the auditor's copy, exported from the database and checked offline with key.pub
    def export(out: Path, **extra: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        exported = subprocess.run(
            [str(BIN), "audit", "export", "--out", str(out), "--catalog", str(CATALOG),
             "--db", f"sqlite:///{state / 'broker.db'}"],
            env={**os.environ, **env, **extra, "BREAKGLASS_STATE_DIR": str(state),
                 "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"},
            capture_output=True, text=True, timeout=60, check=False)
        assert exported.returncode == 0, exported.stderr
        return exported.stdout, subprocess.run(
            [str(BIN), "audit", "verify", "--export", str(out)],
            capture_output=True, text=True, timeout=60, check=False)

    said, offline = export(tmp_path / "forgot")
    assert "set BREAKGLASS_AUDIT_PREVIOUS_KEYS" in said
    assert offline.returncode == 1
    out = tmp_path / "export"
    said, offline = export(out, BREAKGLASS_AUDIT_PREVIOUS_KEYS=retired)
    assert "note:" not in said
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert (out / "key.pub").read_text().splitlines() == keys
    entries = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    rotations = [e for e in entries if e["action"] == "audit:key:rotated"]
    assert len(rotations) == 1
    assert rotations[0]["payload"]["retired"] == retired.strip()
    assert rotations[0]["payload"]["signing"] == keys[0]
