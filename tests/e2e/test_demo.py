"""`make run` (`breakglass demo`): the README's first steps work, and Ctrl-C leaves nothing."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.conftest import BIN, Cli, free_port
from tests.services import require


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # the process ended meanwhile
    return found


def test_the_demo_grants_real_access_and_ctrl_c_removes_its_cluster_and_files(
        tmp_path: Path) -> None:
    require("BG_TEST_PG_BIN")  # the demo starts its own PostgreSQL cluster with these
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen([str(BIN), "demo", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(server + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if demo.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not come up:\n{demo.communicate()[0]}")
            time.sleep(0.3)
        cli = Cli(server, tmp_path)
        assert cli.run("alice", "login", "--dev", "alice").returncode == 0
        made = cli.run("alice", "request", "feature-store-read", "--incident", "INC-123",
                       "--reason", "recovery", "--ttl", "2m", "--json")
        assert made.returncode == 0, made.stderr
        request = json.loads(made.stdout)
        assert (request["state"], request["zone"]) == ("active", "A")
        shown = cli.run("alice", "creds", request["id"], "--format", "json")
        assert shown.returncode == 0, shown.stderr
        cred = json.loads(shown.stdout)
        with psycopg.connect(host=cred["host"], port=cred["port"], dbname=cred["dbname"],
                             user=cred["username"], password=cred["password"],
                             autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM features.online").fetchone() == (20,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM features.online")
    finally:
        demo.send_signal(signal.SIGINT)
        output = demo.communicate(timeout=60)[0]
    found = re.search(r"database: SQLite in (\S+)", output)
    assert found, output
    workdir = found.group(1)
    assert not Path(workdir).exists()
    assert _processes_mentioning(workdir) == []  # the cluster stopped with the demo


def _start_demo() -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen([str(BIN), "demo", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(server + "/readyz", timeout=2).status_code == 200:
                return demo, server
        except httpx.HTTPError:
            pass
        if demo.poll() is not None or time.monotonic() > deadline:
            demo.kill()
            pytest.fail(f"the demo did not come up:\n{demo.communicate()[0]}")
        time.sleep(0.3)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_every_stop_signal_removes_the_cluster_and_its_directory(sig: signal.Signals) -> None:
    """A terminal closing (SIGHUP), a supervisor stopping it (SIGTERM) or Ctrl-C (SIGINT):
    no process of the demo survives and no breakglass-demo-* directory remains."""
    require("BG_TEST_PG_BIN")
    before = set(Path(tempfile.gettempdir()).glob("breakglass-demo-*"))
    demo, _ = _start_demo()
    [started] = set(Path(tempfile.gettempdir()).glob("breakglass-demo-*")) - before
    logs = list(started.glob("pg/pgdata/log/*.csv"))
    assert logs, "the demo cluster writes no csvlog for the identity-change detector"
    demo.send_signal(sig)
    output = demo.communicate(timeout=60)[0]
    found = re.search(r"database: SQLite in (\S+)", output)
    assert found, output
    workdir = found.group(1)
    assert not Path(workdir).exists(), output
    assert _processes_mentioning(workdir) == []
    assert "Traceback" not in output
