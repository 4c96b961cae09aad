"""Real broker processes for fleet and outage tests: ``breakglass serve`` and ``worker``."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from breakglass.domain.model import Principal, PrincipalKind

BIN = Path(sys.executable).parent / "breakglass"
FIXTURES = Path(__file__).parent.parent / "fixtures"
CATALOG = FIXTURES / "catalog_fleet.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def responder() -> Principal:
    """The catalog's ``uma``, freshly authenticated with MFA."""
    return Principal("uma", PrincipalKind.HUMAN, frozenset({"team:ml-serving", "responders"}),
                     True, datetime.now(UTC))


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[bytes]
    state: Path
    url: str | None = None

    def log(self) -> str:
        return (self.state / "broker.log").read_text(errors="replace")[-4000:]


@contextmanager
def broker_process(kind: str, state: Path, db_url: str, env: Mapping[str, str],
                   catalog: Path = CATALOG, *, wait: bool = True) -> Iterator[BrokerProcess]:
    """``breakglass serve --dev`` (kind ``serve``) or ``breakglass worker`` with its own state
    directory, stopped with SIGTERM on exit; yields once it is up (or at once without
    ``wait``: call :func:`wait_up` later)."""
    state.mkdir(parents=True, exist_ok=True)
    argv = [str(BIN), kind, "--catalog", str(catalog), "--db", db_url]
    url = None
    if kind == "serve":
        port = free_port()
        argv += ["--dev", "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, **env, "BREAKGLASS_STATE_DIR": str(state),
                "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"}
    with (state / "broker.log").open("wb") as log, subprocess.Popen(
        argv, env=full_env, stdout=log, stderr=subprocess.STDOUT
    ) as proc:
        broker = BrokerProcess(proc, state, url)
        try:
            if wait:
                wait_up(broker)
            yield broker
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_up(broker: BrokerProcess) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if broker.proc.poll() is not None:
            pytest.fail(f"broker exited with {broker.proc.returncode}:\n{broker.log()}")
        if broker.url is None:
            if (broker.state / "instance-id").exists():  # bootstrap is done; the loop starts
                return
        else:
            try:
                if httpx.get(broker.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    pytest.fail(f"broker did not come up within 30 s:\n{broker.log()}")


_LINE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (LOG|DETAIL):  (.*)$")
_PARAM = re.compile(r"^parameters: \$1 = '([^']*)'")
_DROP = re.compile(r'DROP ROLE IF EXISTS "([^"]+)"')


@dataclass
class Revocations:
    terminations: dict[str, int]  # role -> pg_terminate_backend statements for it
    drops: dict[str, int]  # role -> DROP ROLE statements for it
    backends: dict[int, int]  # backend pid -> roles it dropped (which broker did the work)


def count_revocations(log: Path, offset: int, roles: set[str]) -> Revocations:
    """Target-side statements of broker revocations for ``roles``, from the server log."""
    last: dict[int, str] = {}
    result = Revocations({}, {}, {})
    with log.open(errors="replace") as fh:
        fh.seek(offset)
        for line in fh:
            found = _LINE.match(line.rstrip("\n"))
            if found is None:
                continue
            pid, kind, text = int(found[1]), found[2], found[3]
            if kind == "LOG":
                last[pid] = text
                drop = _DROP.search(text)
                if drop and drop[1] in roles:
                    result.drops[drop[1]] = result.drops.get(drop[1], 0) + 1
                    result.backends[pid] = result.backends.get(pid, 0) + 1
                continue
            param = _PARAM.match(text)
            if param and param[1] in roles and "pg_terminate_backend" in last.get(pid, ""):
                result.terminations[param[1]] = result.terminations.get(param[1], 0) + 1
    return result
