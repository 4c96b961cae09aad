"""The export layout that ``breakglass audit verify --export DIR`` reads.

``DIR/events.jsonl`` (each event with its index and leaf hash, canonical key
order) or ``DIR/events.ocsf.jsonl``, ``DIR/checkpoints/<size>.txt`` (every
signed checkpoint) and ``DIR/key.pub`` (the verifier keys, one a line). The
same files come from the database (``AuditLog.export``) or from a server's API.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from breakglass.audit.ocsf import to_ocsf

FORMATS = ("jsonl", "ocsf")


def write_export(out: Path, fmt: str, entries: Iterable[Mapping[str, Any]],
                 checkpoints: Iterable[str], verifier_keys: str,
                 later: Callable[[], Iterable[str]] | None = None) -> Path:
    """Write the export into ``out``; returns the events file.

    ``checkpoints`` are read before the entries and all written; ``later`` (for a live
    log) is read after them, and of those the ones the rows cover are added: the
    export then holds every checkpoint its rows announce (``audit:checkpoint:published``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)

    def keep(text: str) -> None:
        size = int(text.splitlines()[1])
        (out / "checkpoints" / f"{size:020d}.txt").write_text(text)

    for text in checkpoints:
        keep(text)
    (out / "key.pub").write_text(verifier_keys)
    target = out / ("events.jsonl" if fmt == "jsonl" else "events.ocsf.jsonl")
    count = 0
    with target.open("w") as fh:
        for entry in entries:
            record = dict(entry) if fmt == "jsonl" else to_ocsf(dict(entry))
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            count += 1
    for text in later() if later is not None else ():
        if int(text.splitlines()[1]) <= count:  # a larger one was signed after the rows
            keep(text)
    return target
