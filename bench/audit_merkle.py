"""Audit tamper evidence at scale: verification rate, proof size and proof cost.

Writes a synthetic log of sealed events (default 1,000,000) to a JSON Lines
file with a signed checkpoint every 100,000 rows, then measures:

* offline verification streamed from the file (parse + verify, what
  ``breakglass audit verify`` does) and the process's memory growth meanwhile;
* verification of rows already in memory (the S7 target: 1,000,000 in < 10 s);
* the size of an inclusion proof at that size (S7: O(log n), at most 1 KiB);
* proof generation time from the leaf hashes, cold and with a subtree cache;
* signing a checkpoint from the writer's tree state (S7: within 1 s).

    python bench/audit_merkle.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from breakglass.audit import (
    TreeState,
    Verifiers,
    canonical_json,
    consistency_proof,
    inclusion_proof,
    public_key_text,
    read_jsonl,
    seal_event,
    sign_checkpoint,
    verify_inclusion,
    verify_log,
)

ORIGIN = NAME = "bench.breakglass.example/audit"
ACTIONS = ("request:created", "request:approval:added", "grant:activated", "grant:revoked")


def synthetic(index: int) -> dict[str, Any]:
    return {
        "index": index,
        "ts": f"2025-03-01T{index // 3600 % 24:02d}:{index // 60 % 60:02d}:{index % 60:02d}+00:00",
        "actor": f"user{index % 97}@example.com",
        "action": ACTIONS[index % 4],
        "outcome": "ok",
        "request_id": f"req_{index // 4:010d}",
        "grant_id": None if index % 4 < 2 else f"grt_{index // 4:010d}",
        "incident": f"INC-{index // 1000}",
        "zone": "prod",
        "rule": None,
        "reason": "restore embeddings service",
        "payload": {"ttl": 3600, "roles": ["embeddings-read"]},
    }


def peak_rss_mib() -> float:
    """This process image's peak RSS (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_log(
    path: Path, n: int, key: Ed25519PrivateKey, every: int
) -> tuple[list[str], list[bytes]]:
    state, prev, checkpoints, leaves = TreeState(), None, [], []
    with path.open("wb") as out:
        for i in range(n):
            row = seal_event(synthetic(i), prev)
            prev = bytes.fromhex(row["leaf_hash"])
            leaves.append(prev)
            state.append(prev)
            out.write(canonical_json(row) + b"\n")
            if state.size % every == 0 or state.size == n:
                checkpoints.append(sign_checkpoint(ORIGIN, state.size, state.root(), key, NAME))
    return checkpoints, leaves


def verifier_rss(tmp: str, rows: int) -> float:
    """Peak RSS (MiB) of a fresh process verifying the first ``rows`` rows of the file."""
    out = subprocess.run(
        [sys.executable, __file__, "--verify-only", tmp, "--n", str(rows)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def verify_only(tmp: Path, rows: int) -> None:
    keys = Verifiers.parse((tmp / "key.pub").read_text())
    heads = [c for c in json.loads((tmp / "checkpoints.json").read_text())
             if int(c.split("\n")[1]) <= rows]  # fmt: skip
    with (tmp / "events.jsonl").open("rb") as lines:
        rows_read = itertools.islice(read_jsonl(lines), rows)
        report = verify_log(rows_read, heads, keys, ORIGIN, require_checkpoint=False)
    assert report.ok, report.problems[:3]
    print(peak_rss_mib())


def timed(label: str, fn: Any) -> Any:
    start = time.perf_counter()
    value = fn()
    print(f"  {label:<44} {time.perf_counter() - start:8.3f} s")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--verify-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n: int = args.n
    if args.verify_only:
        verify_only(args.verify_only, n)
        return
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        print(f"audit log: {n:,} synthetic events")
        checkpoints, leaves = timed(
            "write, seal and checkpoint every 100,000", lambda: write_log(path, n, key, 100_000)
        )
        print(f"  file size {path.stat().st_size / 2**20:.0f} MiB, {len(checkpoints)} checkpoints")

        with path.open("rb") as lines:
            start = time.perf_counter()
            report = verify_log(read_jsonl(lines), checkpoints, Verifiers.of(NAME, public), ORIGIN)
            streamed = time.perf_counter() - start
        assert report.ok, report.problems[:3]
        print(f"  verify streamed from JSONL (parse + verify)   {streamed:8.3f} s "
              f"= {n / streamed:,.0f} events/s")  # fmt: skip
        (Path(tmp) / "checkpoints.json").write_text(json.dumps(checkpoints))
        (Path(tmp) / "key.pub").write_text(public_key_text(public, NAME))
        for count in (n // 10, n):
            rss = verifier_rss(tmp, count)
            print(f"  peak RSS of a verifier process, {count:>9,} rows {rss:8.1f} MiB")

        def rows() -> Iterator[dict[str, Any]]:
            with path.open("rb") as lines:
                for line in lines:
                    yield json.loads(line)

        loaded = list(rows())
        start = time.perf_counter()
        report = verify_log(loaded, checkpoints, Verifiers.of(NAME, public), ORIGIN)
        in_memory = time.perf_counter() - start
        assert report.ok
        del loaded
        print(f"  verify rows in memory                         {in_memory:8.3f} s "
              f"= {n / in_memory:,.0f} events/s")  # fmt: skip

    size, index = n, n * 3 // 4
    head = TreeState()
    for leaf in leaves:
        head.append(leaf)
    root = head.root()
    proof = timed(
        "inclusion proof, cold (Sequence source)", lambda: inclusion_proof(index, size, leaves)
    )
    assert verify_inclusion(leaves[index], index, size, proof, root)
    print(f"  inclusion proof at {size:,}: {len(proof)} hashes = {sum(map(len, proof))} bytes")
    cache: dict[tuple[int, int], bytes] = {}

    def blocks(a: int, b: int) -> list[bytes]:
        return leaves[a:b]

    timed(
        "inclusion proof, cold (ranged reads + cache)",
        lambda: inclusion_proof(index, size, blocks, cache=cache),
    )
    timed(
        "inclusion proof, another index, warm cache",
        lambda: inclusion_proof(index // 3, size, blocks, cache=cache),
    )
    timed(
        "consistency proof n/2 -> n, warm cache",
        lambda: consistency_proof(size // 2, size, blocks, cache=cache),
    )
    print(f"  subtree cache entries: {len(cache)}")
    timed(
        "checkpoint: root from tree state + sign",
        lambda: sign_checkpoint(ORIGIN, head.size, head.root(), key, NAME),
    )

    print("targets:")
    per_s = n / in_memory
    print(
        f"  verify >= 100,000 events/s (1M in < 10 s): {'met' if per_s >= 100_000 else 'NOT met'}"
    )
    print(f"  inclusion proof <= 1 KiB: {'met' if sum(map(len, proof)) <= 1024 else 'NOT met'}")


if __name__ == "__main__":
    main()
