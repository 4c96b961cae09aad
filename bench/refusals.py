"""A flood of bad bearer tokens against a running broker: what it costs, what it writes.

Starts ``breakglass serve --dev`` on SQLite (synchronous=FULL) twice: with the
default refusal budget (60 recorded a minute per address, 600 in all) and with
a budget no flood reaches (every refusal recorded one by one, as before the
budget). Each time, ``--clients`` threads send ``--requests`` bad tokens over
keep-alive HTTP; then the broker is stopped (it writes the counts it holds) and
the audit log is read. Prints refusals served per second with P50/P99 latency,
events written per refusal, and whether every refusal is accounted for (the
recorded events plus the counts in ``identity:refusals:counted``).

    python bench/refusals.py [--requests 6000] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "tests" / "fixtures" / "catalog.yaml"
BIN = Path(sys.executable).parent / "breakglass"
UNLIMITED = {"BREAKGLASS_ANON_REFUSALS_PER_ADDRESS": "999999999",
             "BREAKGLASS_ANON_REFUSALS_PER_MINUTE": "999999999"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flood(url: str, requests: int, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        mine: list[float] = []
        with httpx.Client(timeout=30) as http:
            for _ in range(n):
                token = secrets.token_urlsafe(24)
                start = time.perf_counter()
                answer = http.get(url + "/v1/requests",
                                  headers={"Authorization": f"Bearer {token}"})
                mine.append((time.perf_counter() - start) * 1000)
                if answer.status_code != 401:
                    sys.exit(f"expected 401, got {answer.status_code}: {answer.text[:200]}")
        with lock:
            latencies.extend(mine)

    each = requests // clients
    threads = [threading.Thread(target=client, args=(each,)) for _ in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return each * clients / (time.perf_counter() - start), latencies


def run(requests: int, clients: int, extra: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bg-refusals-") as tmp:
        state = Path(tmp)
        port = free_port()
        env = {**os.environ, **extra, "BREAKGLASS_STATE_DIR": str(state),
               "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor",
               "TEST_TARGET_DSN": "postgresql://nobody@127.0.0.1:9/never_contacted"}
        db = state / "broker.db"
        with (state / "server.log").open("w") as log:
            proc = subprocess.Popen(
                [str(BIN), "serve", "--catalog", str(CATALOG), "--dev", "--port", str(port),
                 "--db", f"sqlite:///{db}"], env=env, stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            try:
                for _ in range(300):
                    try:
                        if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                rate, latencies = flood(url, requests, clients)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        with closing(sqlite3.connect(db)) as conn:
            single = conn.execute("SELECT count(*) FROM events WHERE action = "
                                  "'identity:token:refused'").fetchone()[0]
            counted = [json.loads(p)["counted"] for (p,) in conn.execute(
                "SELECT payload FROM events WHERE action = 'identity:refusals:counted'")]
    ordered = sorted(latencies)
    return {"rate": rate, "p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "events": single + len(counted), "accounted": single + sum(counted),
            "sent": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    rows = {"default budget (60/address, 600/min)": run(args.requests, args.clients, {}),
            "no budget (every refusal an event)": run(args.requests, args.clients, UNLIMITED)}
    print(f"bad tokens from one address, {args.clients} keep-alive clients, "
          f"{args.requests} requests, SQLite synchronous=FULL")
    print(f"  {'':<38} {'refusals/s':>10} {'P50 ms':>7} {'P99 ms':>7} {'events':>7} "
          f"{'events/refusal':>14} {'accounted':>10}")
    for label, r in rows.items():
        print(f"  {label:<38} {r['rate']:10.0f} {r['p50']:7.1f} {r['p99']:7.1f} "
              f"{r['events']:7.0f} {r['events'] / r['sent']:14.3f} "
              f"{r['accounted']:.0f}/{r['sent']:.0f}")


if __name__ == "__main__":
    main()
