"""Offline verification of an exported audit log against its signed checkpoints.

A row is a JSON mapping with ``index`` (gapless from 0), ``ts``, ``action``
and any other JSON fields; its leaf is defined in :mod:`.canonical`.

:func:`verify_log` streams the rows once, keeping a :class:`TreeState` and
not the rows, so its memory does not grow with the log. It reports each
problem at the position where the log first goes wrong, problems at an exact
row before those that only bound a range:

* a missing row k, or rows moved from position k: ``gap`` at k;
* a row whose index is not above the one before (a forged row inserted with
  a copied index, or a moved row): ``out_of_order`` at that index;
* a row whose content no longer matches its stored ``leaf_hash``: ``leaf_hash``
  at its index; a ``prev_hash`` that does not match the row before: ``chain``;
* a log rewritten wholesale with every hash recomputed: ``checkpoint`` at
  the first index after the last checkpoint that still matches, since the
  signed roots cannot be recomputed without the key;
* a log shorter than a signed checkpoint: ``truncated`` at its first missing index;
* a checkpoint larger than the log was when its key was retired (an
  ``audit:key:rotated`` row names the retired key): ``retired_key`` at that row,
  so a leaked old key cannot vouch for history written after the rotation;
* a log that announces (or a witness that signs) a checkpoint larger than the
  newest one given: ``missing_checkpoint``; a log that does not extend a witness:
  ``witness`` or ``truncated`` naming it (see :mod:`.announcements`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from breakglass.audit.announcements import (
    ANNOUNCED,
    Announcements,
    newest_signed,
    read_witnesses,
)
from breakglass.audit.canonical import (
    LEAF_HASH_FIELD,
    PREV_HASH_FIELD,
    BadRow,
    JsonLine,
    event_leaf_bytes,
    event_leaf_hash,
    leaf_from_line,
)
from breakglass.audit.checkpoint import (
    Checkpoint,
    Verifier,
    Verifiers,
    parse_checkpoint,
    verify_checkpoint,
)
from breakglass.audit.merkle import EMPTY_ROOT, TreeState, verify_inclusion
from breakglass.domain.errors import AuditError
from breakglass.domain.events import EventTag

MAX_PROBLEMS = 1000

_sha256 = hashlib.sha256


@dataclass(frozen=True)
class Problem:
    index: int | None
    kind: str
    detail: str

    def __str__(self) -> str:
        where = f"index {self.index}" if self.index is not None else "checkpoints"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    ok: bool
    size: int
    root_hex: str
    problems: list[Problem] = field(default_factory=list)
    anchored_size: int = 0
    checkpoints_verified: int = 0
    problems_omitted: int = 0
    notes: list[str] = field(default_factory=list)
    newest_checkpoint: str | None = None  # the text of the one that signs anchored_size


_RANGE_KINDS = frozenset({"checkpoint", "truncated", "unanchored", "missing_checkpoint",
                          "announcement", "witness"})


def _precision(problem: Problem) -> tuple[int, int]:
    """Problems at an exact row first, then those that bound a range, then the rest."""
    if problem.index is None:
        return 2, 0
    return (1 if problem.kind in _RANGE_KINDS else 0), problem.index


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.omitted = 0
        self.newest_given = 0  # the largest checkpoint given, trusted or not

    def add(self, index: int | None, kind: str, detail: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(Problem(index, kind, detail))
        else:
            self.omitted += 1

    def check_index(self, index: Any, expected: int) -> int:
        """Report an index that breaks the gapless sequence; the index to go on with."""
        if type(index) is not int:
            self.add(expected, "bad_index", f"row has no integer index: {index!r}")
            return expected
        if index > expected:
            missing = f"{expected}" if index == expected + 1 else f"{expected}..{index - 1}"
            self.add(
                expected, "gap", f"expected index {expected}, found {index}: {missing} missing"
            )
        elif index < expected:
            detail = f"index {index} comes after index {expected - 1}: a row inserted or moved"
            self.add(index, "out_of_order", detail)
        return index


_ROTATED = str(EventTag.AUDIT_KEY_ROTATED)


@dataclass(frozen=True)
class _Head:
    checkpoint: Checkpoint
    signers: tuple[Verifier, ...]
    text: str
    witness: str | None = None  # the name of the witness it came from, if it did


def _signed_heads(
    texts: Iterable[str], keys: Verifiers, origin: str, problems: _Problems
) -> dict[int, _Head]:
    by_size: dict[int, _Head] = {}
    for number, text in enumerate(texts, start=1):
        try:
            head, signers = verify_checkpoint(text, keys, origin)
        except AuditError as exc:
            problems.add(None, "checkpoint_invalid", f"checkpoint #{number}: {exc}")
            with contextlib.suppress(AuditError):  # it is given, if not trusted
                problems.newest_given = max(problems.newest_given, parse_checkpoint(text).size)
            continue
        problems.newest_given = max(problems.newest_given, head.size)
        seen = by_size.setdefault(head.size, _Head(head, signers, text))
        if seen.checkpoint.root != head.root:
            problems.add(
                None, "checkpoint_fork", f"two signed checkpoints of size {head.size} differ"
            )
    return by_size


def _add_witnesses(by_size: dict[int, _Head], witnesses: Iterable[tuple[str, str]],
                   keys: Verifiers, origin: str, problems: _Problems) -> list[_Head]:
    """Add each valid witness to the heads the log must match; the witnesses added."""
    found: list[_Head] = []
    for witness in read_witnesses(witnesses, keys, origin, problems.add):
        head, name = witness.checkpoint, witness.name
        given = by_size.get(head.size)
        if given is not None and given.checkpoint.root != head.root:
            problems.add(None, "witness", f"the witness {name} signs root {head.root.hex()} "
                         f"for {head.size} entries, the checkpoint given for that size signs "
                         f"{given.checkpoint.root.hex()}: the log was rewritten and re-signed")
            continue
        added = _Head(head, witness.signers, witness.text, name)
        by_size.setdefault(head.size, added)
        found.append(added)
    return found


def _row_leaf(row: Mapping[str, Any], index: int, problems: _Problems) -> bytes | None:
    """The row's leaf hash, with a problem if it disagrees with the stored one."""
    stored = row.get(LEAF_HASH_FIELD)
    if type(row) is JsonLine and type(stored) is str and (leaf := leaf_from_line(row, stored)):
        return leaf
    try:
        leaf = event_leaf_hash(row)
    except AuditError as exc:
        problems.add(index, "unencodable", str(exc))
        return None
    if stored is not None and stored != leaf.hex():
        problems.add(index, "leaf_hash", f"row content does not match its leaf_hash {stored}")
    return leaf


def verify_log(
    events: Iterable[Mapping[str, Any] | JsonLine | BadRow],
    checkpoints: Iterable[str],
    keys: Verifiers,
    origin: str,
    *,
    require_checkpoint: bool = True,
    witnesses: Iterable[tuple[str, str]] = (),
    later_checkpoints: Callable[[], Iterable[str]] | None = None,
) -> VerifyReport:
    """Verify an exported log against the signed checkpoints, in one streaming pass.

    ``events`` are mappings in index order (database rows, or :func:`read_jsonl`
    of an export, whose canonical lines are checked without re-encoding). With
    ``require_checkpoint`` a non-empty log that no valid checkpoint covers
    fails: without a signed root a wholesale rewrite cannot be told apart. A checkpoint
    may be signed by any of ``keys`` (the current key and those it replaced).

    ``witnesses`` (name, checkpoint text) are checkpoints kept outside the broker: the
    log must extend each one, and the checkpoints given must reach it. Announcements
    in the log must not name a checkpoint beyond the newest given; ``later_checkpoints``
    (read after the rows, from a live log) count for that too.
    """
    problems = _Problems()
    by_size = _signed_heads(checkpoints, keys, origin, problems)
    newest_given = problems.newest_given
    kept = _add_witnesses(by_size, witnesses, keys, origin, problems)
    heads = [by_size[size] for size in sorted(by_size)]
    announced = Announcements(problems.add, roots={
        size: head.checkpoint.root.hex() for size, head in by_size.items() if not head.witness})
    tree = TreeState()
    state = _Anchoring(heads, problems)
    state.reached(tree)
    expected = 0
    prev: bytes | None = None
    for row in events:
        if isinstance(row, BadRow):
            problems.add(expected, "unreadable", f"line {row.line}: {row.error}")
            expected += 1
            continue
        index = problems.check_index(row.get("index"), expected)
        leaf = _row_leaf(row, index, problems)
        if leaf is None:
            expected = index + 1
            continue
        if PREV_HASH_FIELD in row:
            want = prev.hex() if prev is not None else None
            if row[PREV_HASH_FIELD] != want:
                detail = f"prev_hash is not the leaf hash {want} of the row before: one was altered"
                problems.add(index, "chain", detail)
        prev = leaf
        if row.get("action") == _ROTATED:
            state.retire(row, index)
        elif row.get("action") == ANNOUNCED:
            announced.saw(row, index)
        tree.append(leaf)
        expected = index + 1
        if tree.size == state.next_size:
            state.reached(tree)
    state.finish(tree)
    if later_checkpoints is not None:
        newest_given = max(newest_given, newest_signed(later_checkpoints(), keys, origin))
    announced.finish(newest_given, [(w.checkpoint, w.witness or "") for w in kept])
    if require_checkpoint and tree.size and not heads:
        problems.add(0, "unanchored", "no valid signed checkpoint covers this log")
    return VerifyReport(
        ok=not problems.items and not problems.omitted,
        size=tree.size,
        root_hex=tree.root().hex(),
        problems=sorted(problems.items, key=_precision),
        anchored_size=state.good_size,
        checkpoints_verified=state.verified,
        problems_omitted=problems.omitted,
        newest_checkpoint=state.good_text,
    )


def anchored_within(anchored: Iterable[str], size: int | None) -> tuple[list[str], list[str]]:
    """Checkpoints read straight from a write-once anchor, to verify a copy of ``size`` rows
    against (all of them for the live log, ``size`` None), and notes on what was left out.

    A copy (an export, an evidence zip) is a snapshot: anchored checkpoints of a larger
    tree came after it, or its tail was cut, which only the live log can tell apart.
    """
    kept: list[str] = []
    beyond: list[str] = []
    for text in anchored:
        try:
            larger = size is not None and parse_checkpoint(text).size > size
        except AuditError:
            larger = False  # kept: verification reports it
        (beyond if larger else kept).append(text)
    notes = [f"checked against {len(kept)} checkpoint(s) read from the anchor"]
    if beyond:
        newest = max(parse_checkpoint(text).size for text in beyond)
        notes.append(f"{len(beyond)} anchored checkpoint(s) sign more than these {size} events "
                     f"(up to {newest}): this copy predates them, or its tail was cut; verify "
                     "the live log to tell which")
    return kept, notes


def verify_proofs(
    rows: Iterable[Mapping[str, Any]],
    proofs: Mapping[int, Sequence[bytes]],
    size: int,
    root: bytes,
) -> list[Problem]:
    """Check that each row is the leaf at its ``index`` of the tree ``(size, root)``."""
    found = []
    for row in rows:
        index = row.get("index")
        path = proofs.get(index) if type(index) is int else None
        if type(index) is not int or path is None:
            found.append(Problem(None, "proof", f"no inclusion proof for row {index!r}"))
            continue
        try:
            leaf = _sha256(b"\x00" + event_leaf_bytes(row)).digest()
        except AuditError as exc:
            found.append(Problem(index, "proof", str(exc)))
            continue
        if not verify_inclusion(leaf, index, size, path, root):
            found.append(Problem(index, "proof", "row is not at this index of the signed tree"))
    return found


class _Anchoring:
    """Walks the signed heads in size order as the tree grows."""

    def __init__(self, heads: list[_Head], problems: _Problems) -> None:
        self._heads = heads
        self._next = 0
        self._problems = problems
        self._retired: dict[str, int] = {}  # vkey -> index of the row that retired it
        self.good_size = 0
        self.good_text: str | None = None
        self.verified = 0
        self.next_size = heads[0].checkpoint.size if heads else -1

    def retire(self, row: Mapping[str, Any], index: int) -> None:
        """An ``audit:key:rotated`` row: its retired key signs no tree larger than ``index``."""
        payload = row.get("payload")
        retired = payload.get("retired") if isinstance(payload, Mapping) else None
        if isinstance(retired, str):
            self._retired.setdefault(retired, index)

    def reached(self, tree: TreeState) -> None:
        """Compare the tree with the head of its size, if there is one."""
        if self.next_size != tree.size:
            return
        found = self._heads[self._next]
        head, signers = found.checkpoint, found.signers
        root = tree.root() if tree.size else EMPTY_ROOT
        # it stands if one of its signers was not retired before the tree reached its size
        retired_at = max(self._retired.get(s.text(), head.size) for s in signers)
        if retired_at < head.size:
            names = ", ".join(f"{s.name}+{s.tag.hex()}" for s in signers)
            self._problems.add(
                retired_at,
                "retired_key",
                f"checkpoint of size {head.size} is signed only by {names}, retired by index "
                f"{retired_at}: a retired key signs nothing after its rotation",
            )
        elif root == head.root:
            self.good_size, self.good_text = head.size, found.text
            self.verified += 1
        elif found.witness:
            self._problems.add(
                self.good_size,
                "witness",
                f"the witness {found.witness} signs root {head.root.hex()} for the first "
                f"{head.size} entries, the log gives {root.hex()}: it does not extend the "
                f"witness; a row from index {self.good_size} on was rewritten",
            )
        else:
            self._problems.add(
                self.good_size,
                "checkpoint",
                f"checkpoint of size {head.size} signs root {head.root.hex()}, the log's first "
                f"{head.size} rows give {root.hex()}: a row from index {self.good_size} "
                "on was altered",
            )
        self._next += 1
        self.next_size = (self._heads[self._next].checkpoint.size
                          if self._next < len(self._heads) else -1)

    def finish(self, tree: TreeState) -> None:
        if self._next < len(self._heads):
            newest = self._heads[-1].checkpoint.size
            witnesses = [h for h in self._heads[self._next:] if h.witness]
            by = (f"the witness {witnesses[-1].witness} signs {witnesses[-1].checkpoint.size}"
                  if witnesses else f"a checkpoint signs {newest}")
            self._problems.add(
                tree.size,
                "truncated",
                f"the log ends after {tree.size} rows but {by}",
            )
