"""What the log itself says was signed, and what an auditor kept: the floor for verification.

The anchored checkpoints a verifier is given can be incomplete: whoever can
write a local anchor directory can delete its newest files, and with them cut
the log's tail. Two records outlive such a cut, at least in part:

* the log's own ``audit:checkpoint:published`` rows: after the broker signs a
  checkpoint and an anchor takes it, it writes its size and root into the log.
  A log whose rows announce a checkpoint larger than the newest one given lost
  that checkpoint (``missing_checkpoint``); an announcement whose root differs
  from the given checkpoint of its size was forged (``announcement``).
* a witness: a signed checkpoint kept outside the broker's reach, the
  auditor's copy from the last verification (``audit verify --save-witness``)
  or ``GET /v1/audit/checkpoint`` fetched by anyone. The log must extend it:
  as long, with the same root at its size (the verifier recomputes that root
  from the rows, which a consistency proof only summarises); and the
  checkpoints given must reach it.

An attacker who can rewrite the database and the anchor directory can still
cut the tail *with* its announcements; only a witness taken after the cut
point, or a write-once anchor (S3 Object Lock), shows that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from breakglass.audit.checkpoint import Checkpoint, Verifier, Verifiers, verify_checkpoint
from breakglass.domain.errors import AuditError
from breakglass.domain.events import EventTag

ANNOUNCED = str(EventTag.CHECKPOINT_PUBLISHED)

AddProblem = Callable[[int | None, str, str], None]


@dataclass(frozen=True)
class Announcement:
    """A row saying that the checkpoint ``(size, root)`` was signed and anchored."""

    index: int
    size: int
    root_hex: str
    anchors: tuple[str, ...] = ()


def announcement_payload(checkpoint: Checkpoint, anchors: Iterable[str]) -> dict[str, Any]:
    """The payload of the row announcing ``checkpoint``."""
    return {"size": checkpoint.size, "root": checkpoint.root.hex(), "anchors": sorted(anchors)}


@dataclass
class Announcements:
    """Collects the announcements of a log as it streams by, and checks them at the end."""

    add: AddProblem
    newest: Announcement | None = None
    roots: dict[int, str] = field(default_factory=dict)  # size -> root of a given checkpoint

    def saw(self, row: Mapping[str, Any], index: int) -> None:
        """Row ``index`` is an announcement: keep it if it is the largest so far."""
        payload = row.get("payload")
        size = payload.get("size") if isinstance(payload, Mapping) else None
        root = payload.get("root") if isinstance(payload, Mapping) else None
        if type(size) is not int or not isinstance(root, str) or not 0 < size <= index:
            self.add(index, "announcement", "a checkpoint announcement that names no checkpoint "
                     f"before its own row (size {size!r}): it was forged or altered")
            return
        given = self.roots.get(size)
        if given is not None and given != root:
            self.add(index, "announcement", f"the log announces checkpoint {size} with root "
                     f"{root}, the checkpoint given for that size signs {given}")
        if self.newest is None or size >= self.newest.size:
            anchors = payload.get("anchors") if isinstance(payload, Mapping) else None
            where = tuple(a for a in anchors if isinstance(a, str)) if isinstance(
                anchors, list) else ()
            self.newest = Announcement(index, size, root, where)

    def finish(self, newest_given: int, witnesses: Iterable[tuple[Checkpoint, str]]) -> None:
        """Report what was announced or witnessed beyond the newest checkpoint given."""
        found = self.newest
        if found is not None and found.size > newest_given:
            where = f" to {', '.join(found.anchors)}" if found.anchors else ""
            self.add(found.index, "missing_checkpoint",
                     f"the log announces at index {found.index} that checkpoint {found.size} "
                     f"(root {found.root_hex}) was published{where}, but the newest checkpoint "
                     f"given signs {newest_given} entries: the anchor's newer checkpoints were "
                     "deleted or withheld")
        for witness, name in witnesses:
            if witness.size > newest_given:
                self.add(newest_given, "missing_checkpoint",
                         f"the witness {name} signs checkpoint {witness.size} (root "
                         f"{witness.root.hex()}), but the newest checkpoint given signs "
                         f"{newest_given} entries: the anchor's newer checkpoints were deleted "
                         "or withheld")


@dataclass(frozen=True)
class Witness:
    """A checkpoint kept outside the broker, that a trusted key signed."""

    checkpoint: Checkpoint
    signers: tuple[Verifier, ...]
    name: str  # where it came from, for messages
    text: str


def read_witnesses(named: Iterable[tuple[str, str]], keys: Verifiers, origin: str,
                   add: AddProblem) -> list[Witness]:
    """The witnesses (``(name, checkpoint text)``) that a trusted key signed for ``origin``;
    each one that is not is a ``witness_invalid`` problem."""
    found: list[Witness] = []
    for name, text in named:
        try:
            checkpoint, signers = verify_checkpoint(text, keys, origin)
        except AuditError as exc:
            add(None, "witness_invalid", f"witness {name}: {exc} (a witness must be a "
                "checkpoint of this log, signed by one of its trusted keys)")
            continue
        found.append(Witness(checkpoint, signers, name, text))
    return found


def newest_signed(texts: Iterable[str], keys: Verifiers, origin: str) -> int:
    """The largest size among ``texts`` that a trusted key signed (0 if none)."""
    newest = 0
    for text in texts:
        try:
            newest = max(newest, verify_checkpoint(text, keys, origin)[0].size)
        except AuditError:
            continue  # not ours: it can raise no floor
    return newest
