"""The audit log as a service: checkpoints, anchoring, proofs, exports, verification.

The event rows are the Merkle leaves (written by :class:`EventLog` in the
transaction of each state change). This service signs tree heads as C2SP
checkpoints, publishes them to write-once anchors, refuses to sign a tree
that does not extend the last one, and at startup refuses to run on a
database whose head is behind or inconsistent with the newest anchored
checkpoint (a restored or rolled-back database).

The signing key can be rotated: start the broker with a new key and the old
verifier key in ``previous`` (``BREAKGLASS_AUDIT_PREVIOUS_KEYS``). Anchored
checkpoints signed by either are trusted; before its first checkpoint the
broker records ``audit:key:rotated`` (retired and new verifier keys, an alert),
after which verifiers refuse any checkpoint by the retired key that covers
more than the log held when it was retired.

Once an anchor holds a new checkpoint, the broker announces it in the log
itself (``audit:checkpoint:published``: size, root, anchors), so a verifier
given an anchor whose newer checkpoints were deleted notices from the rows
(see :mod:`breakglass.audit.announcements`). The announcement is signed at
once by a second checkpoint, which is not announced (it covers nothing but
the announcement), so the log ends on a checkpoint and a quiet log stays quiet.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, select

from breakglass.audit import (
    Anchor,
    Checkpoint,
    CheckpointPolicy,
    Verifier,
    Verifiers,
    VerifyReport,
    anchored_within,
    build_evidence_zip,
    consistency_proof,
    inclusion_proof,
    sign_checkpoint,
    verify_checkpoint,
    verify_log,
)
from breakglass.audit.announcements import ANNOUNCED, announcement_payload
from breakglass.audit.export import write_export
from breakglass.audit.merkle import TreeState
from breakglass.domain.errors import AuditError, InvalidInput, NotFound
from breakglass.domain.events import EventTag, serving
from breakglass.service.ports import Clock
from breakglass.storage import tables as t
from breakglass.storage.events import row_to_event
from breakglass.storage.uow import UnitOfWork

log = structlog.get_logger("breakglass.audit")


class _BoundedCache(OrderedDict[tuple[int, int], bytes]):
    """Subtree roots for proofs, least recently used first out (memory stays flat)."""

    def __init__(self, limit: int = 50_000) -> None:
        super().__init__()
        self._limit = limit

    def __setitem__(self, key: tuple[int, int], value: bytes) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self._limit:
            self.popitem(last=False)


class AuditLog:
    def __init__(self, engine: Engine, *, key: Ed25519PrivateKey, origin: str,
                 anchors: Sequence[Anchor], clock: Clock,
                 previous: Verifiers | None = None) -> None:
        self._engine = engine
        self._key = key
        self.origin = origin
        self._signer = Verifier(origin, key.public_key())
        current = Verifiers((self._signer,))
        self.verifiers = current + previous if previous is not None else current
        self._retiring: tuple[Verifier, int] | None = None  # a rotation not yet recorded
        self._published: dict[str, int] = {}  # anchor location -> largest size it took
        self._failing: dict[str, str] = {}  # anchor location -> why it refused
        self._refusing = False  # a refusal to sign is recorded; each one would add an event
        self._announced = 0  # the size of the last checkpoint announced in the log
        self._anchors = list(anchors)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache = _BoundedCache()
        self._last: Checkpoint | None = None
        self._last_text: str | None = None
        self._state = TreeState()
        self._tail: bytes | None = None  # the last leaf folded into _state
        self._state_lock = threading.Lock()

    @property
    def verifier_keys(self) -> str:
        """The verifier keys (vkey lines): the signing key's, then those it replaced."""
        return self.verifiers.text()

    # -- leaves -----------------------------------------------------------------------

    def _leaves(self, start: int, end: int) -> list[bytes]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(t.events.c.leaf_hash)
                .where(t.events.c.idx >= start, t.events.c.idx < end)
                .order_by(t.events.c.idx)
            ).all()
        return [bytes(r.leaf_hash) for r in rows]

    def head(self) -> tuple[int, bytes]:
        """Size and root of the committed log, as far as its indices run without a gap."""
        with self._state_lock:
            self._tail = self._fold(self._state, self._tail)
            return self._state.size, self._state.root()

    def _fold(self, state: TreeState, tail: bytes | None, upto: int | None = None,
              batch: int = 10_000) -> bytes | None:
        """Append the stored leaves from ``state.size`` on, in index order, to ``state``.

        Stops at ``upto``, at the end of the log, or before a missing index:
        rows commit in index order, so a gap is a deletion, left to verification.
        ``tail`` is the last leaf folded before; it is read again with the new
        ones and must not have changed. Returns the new last leaf.
        """
        while upto is None or state.size < upto:
            end = state.size + batch if upto is None else min(upto, state.size + batch)
            first = state.size - 1 if tail is not None else state.size
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(t.events.c.idx, t.events.c.leaf_hash)
                    .where(t.events.c.idx >= first, t.events.c.idx < end)
                    .order_by(t.events.c.idx)
                ).all()
            if tail is not None:
                if not rows or int(rows[0].idx) != first or bytes(rows[0].leaf_hash) != tail:
                    raise AuditError(
                        f"refusing to sign: audit event {first} changed or vanished after it "
                        "was read; the log was rewritten or rolled back")
                rows = rows[1:]
            for row in rows:
                if int(row.idx) != state.size:
                    return tail
                tail = bytes(row.leaf_hash)
                state.append(tail)
            if state.size < end:
                return tail
        return tail

    # -- checkpoints ------------------------------------------------------------------

    def _newest_anchored(self) -> tuple[Checkpoint, str, tuple[Verifier, ...]] | None:
        best: tuple[Checkpoint, str, tuple[Verifier, ...]] | None = None
        for anchor in self._anchors:
            text = anchor.latest()
            if text is None:
                continue
            try:
                checkpoint, signers = verify_checkpoint(text, self.verifiers, self.origin)
            except AuditError as exc:
                raise AuditError(
                    f"refusing to write: the newest anchored checkpoint is not signed by this "
                    f"broker's audit key or a previous one ({exc}); after rotating the key, list "
                    "the previous verifier key (GET /v1/audit/key before the rotation) in "
                    "BREAKGLASS_AUDIT_PREVIOUS_KEYS") from exc
            if best is None or checkpoint.size > best[0].size:
                best = (checkpoint, text, signers)
        return best

    def check_against_anchors(self) -> None:
        """Refuse to run on a database that the anchored history does not extend to."""
        with self._lock:
            newest = self._newest_anchored()
            self._check_announced(newest[0].size if newest is not None else 0)
            if newest is None:
                return
            checkpoint, text, signers = newest
            state = TreeState()
            tail = self._fold(state, None, upto=checkpoint.size)
            if state.size < checkpoint.size and self._leaves(state.size, checkpoint.size):
                raise AuditError(
                    f"refusing to write: audit event {state.size} is missing from the "
                    "database; history was rewritten")
            if state.size < checkpoint.size:
                raise AuditError(
                    f"refusing to write: the database holds {state.size} audit events but "
                    f"{checkpoint.size} were anchored; it was restored or rolled back")
            if state.root() != checkpoint.root:
                raise AuditError(
                    f"refusing to write: the first {checkpoint.size} audit events in the "
                    "database do not match the anchored checkpoint; history was rewritten")
            self._last, self._last_text = checkpoint, text
            with self._state_lock:
                self._state, self._tail = state, tail
            if self._signer not in signers:
                self._check_not_retired(signers, checkpoint.size)
                self._retiring = (signers[0], checkpoint.size)

    def _check_announced(self, anchored: int) -> None:
        """Refuse to run when the log announces a checkpoint larger than the anchors hold."""
        with self._engine.connect() as conn:
            row = conn.execute(select(t.events.c.idx, t.events.c.payload)
                               .where(t.events.c.action == ANNOUNCED)
                               .order_by(t.events.c.idx.desc()).limit(1)).first()
        if row is None:
            return
        size = (row.payload or {}).get("size")
        if isinstance(size, int) and size > anchored:
            where = ", ".join(a.location for a in self._anchors)
            raise AuditError(
                f"refusing to write: audit event {row.idx} announces checkpoint {size} as "
                f"anchored, but the newest checkpoint in {where} signs {anchored} events: "
                "newer checkpoints were deleted from the anchor (or it moved without them: "
                "copy the old anchor's checkpoint files into it)")

    def _rotations(self, conn: Connection) -> dict[str, int]:
        """Each retired verifier key and the index of the row that retired it."""
        found: dict[str, int] = {}
        for row in conn.execute(
                select(t.events.c.idx, t.events.c.payload)
                .where(t.events.c.action == EventTag.AUDIT_KEY_ROTATED)
                .order_by(t.events.c.idx)):
            retired = (row.payload or {}).get("retired")
            if isinstance(retired, str):
                found.setdefault(retired, int(row.idx))
        return found

    def _check_not_retired(self, signers: tuple[Verifier, ...], size: int) -> None:
        with self._engine.connect() as conn:
            rotations = self._rotations(conn)
        retired_at = max(rotations.get(s.text(), size) for s in signers)
        if retired_at < size:
            names = ", ".join(f"{s.name}+{s.tag.hex()}" for s in signers)
            raise AuditError(
                f"refusing to write: the newest anchored checkpoint ({size} events) is signed "
                f"only by {names}, retired at audit event {retired_at}; whoever holds that key "
                "signed it after the rotation")

    def _record_rotation(self, retired: Verifier, anchored: int) -> None:
        """Write ``audit:key:rotated`` once, however many brokers start with the new key."""
        with UnitOfWork(self._engine, group=False) as uow:
            # the log head, locked: brokers starting together record the rotation once
            uow.connection.execute(select(t.log_head.c.size).with_for_update()).scalar()
            if retired.text() in self._rotations(uow.connection):
                return
            uow.events.append(
                ts=self._clock.now(), actor="broker", action=EventTag.AUDIT_KEY_ROTATED,
                reason="the audit signing key was replaced",
                payload={"retired": retired.text(), "signing": self._signer.text(),
                         "anchored_size": anchored, "alert": True})

    def checkpoint(self) -> str | None:
        """Sign and publish the current head if it grew; return the newest checkpoint.

        Raises ``AuditError`` if the log no longer extends what was signed (rewritten,
        truncated, rolled back); that is recorded once as ``audit:log:tampered``. An
        anchor that cannot take the checkpoint does not stop it: that is recorded once
        per outage as ``audit:anchor:failed``, and every call publishes again to the
        anchors behind until they have it (``audit:anchor:recovered``).
        """
        with self._lock:
            if self._retiring is not None:  # first, so the new key's first checkpoint covers it
                self._record_rotation(*self._retiring)
                self._retiring = None
            for _ in range(2):  # the second round signs the announcement of the first
                try:
                    self._sign()
                except AuditError as exc:
                    self._report_tampering(str(exc))
                    raise
                self._refusing = False
                if self._last is None or self._last_text is None:
                    break
                self._publish(self._last_text, self._last.size)
                if not self._announce(self._last):
                    break
            return self._last_text

    def checkpoint_after_change(self) -> None:
        """The checkpoint after an activation or a revocation has committed.

        The change stands whatever happens here, so nothing is raised to the one who
        made it: refusals and outages are recorded and alerted by :meth:`checkpoint`.
        """
        try:
            self.checkpoint()
        except Exception:  # recorded by checkpoint(); the committed change must stand
            log.exception("checkpoint after a committed change failed")

    def _sign(self) -> None:
        size, head_root = self.head()
        with self._engine.connect() as conn:
            stored = conn.execute(select(t.log_head.c.size)).scalar()
        if stored is not None and stored < size:
            raise AuditError(
                f"refusing to sign: the database's log head counts {stored} events but "
                f"{size} were read from it before; it was truncated or rolled back")
        if size == 0 or (self._last is not None and size <= self._last.size):
            return
        proof = (consistency_proof(self._last.size, size, self._leaves, cache=self._cache)
                 if self._last is not None else [])
        CheckpointPolicy.assert_can_sign(self._last, size, head_root, proof)
        self._last_text = sign_checkpoint(self.origin, size, head_root, self._key,
                                          self._signer.name)
        self._last = Checkpoint(self.origin, size, head_root)

    def _publish(self, text: str, size: int) -> None:
        for anchor in self._anchors:
            if self._published.get(anchor.location, -1) >= size:
                continue
            try:
                anchor.publish(text, size)
            except Exception as exc:  # noqa: BLE001 - an outage, recorded and retried
                if not self._holds(anchor, size):
                    self._report_outage(anchor, size, exc)
                    continue
            self._published[anchor.location] = size
            if self._failing.pop(anchor.location, None) is not None:
                log.warning("anchor recovered", anchor=anchor.location, size=size)
                self._record(EventTag.ANCHOR_RECOVERED, "ok", "the anchor took the checkpoint",
                             {"anchor": anchor.location, "size": size})

    def _announce(self, checkpoint: Checkpoint) -> bool:
        """Write ``audit:checkpoint:published`` for a checkpoint an anchor took, once, unless
        its newest row is itself an announcement (then the checkpoint only signs that one).
        Whether one was written."""
        if checkpoint.size <= self._announced:
            return False
        anchors = [where for where, size in self._published.items() if size >= checkpoint.size]
        if not anchors:
            return False  # announced once an anchor has it
        with self._engine.connect() as conn:
            last = conn.execute(select(t.events.c.action)
                                .where(t.events.c.idx == checkpoint.size - 1)).scalar()
        self._announced = checkpoint.size
        if last == ANNOUNCED:
            return False
        self._record(EventTag.CHECKPOINT_PUBLISHED, "ok",
                     f"checkpoint {checkpoint.size} signed and anchored",
                     announcement_payload(checkpoint, anchors))
        return True

    @staticmethod
    def _holds(anchor: Anchor, size: int) -> bool:
        """Whether the anchor already holds a checkpoint this large (another broker's)."""
        try:
            latest = anchor.latest()
            return latest is not None and int(latest.splitlines()[1]) >= size
        except Exception:  # noqa: BLE001 - then it is down
            return False

    def _report_outage(self, anchor: Anchor, size: int, exc: Exception) -> None:
        log.error("anchor refused a checkpoint", anchor=anchor.location, size=size,
                  error=str(exc))
        if anchor.location in self._failing:
            return
        self._failing[anchor.location] = str(exc)
        self._record(EventTag.ANCHOR_FAILED, "failed", f"checkpoint {size} not anchored: {exc}",
                     {"anchor": anchor.location, "size": size, "alert": True})

    def _report_tampering(self, finding: str) -> None:
        log.error("checkpoint refused", finding=finding)
        if self._refusing:  # once an episode: the event grows the log, rewording the finding
            return
        self._refusing = True
        self._record(EventTag.AUDIT_TAMPERED, "failed", finding,
                     {"last_signed": self._last.size if self._last else 0, "alert": True})

    def _record(self, action: EventTag, outcome: str, reason: str,
                payload: Mapping[str, Any]) -> None:
        # the broker's own finding, even when the checkpoint follows a client's call
        with serving(None), UnitOfWork(self._engine) as uow:
            uow.events.append(ts=self._clock.now(), actor="broker", action=action,
                              outcome=outcome, reason=reason, payload=payload)

    def latest(self) -> str:
        text = self.checkpoint()
        if text is None:
            raise NotFound("the audit log is empty", rule="audit.empty")
        return text

    def foreign_checkpoints(self) -> int:
        """How many anchored checkpoints none of the verifier keys signed."""
        count = 0
        for text in self.checkpoints():
            try:
                verify_checkpoint(text, self.verifiers, self.origin)
            except AuditError:
                count += 1
        return count

    def checkpoints(self) -> list[str]:
        seen: dict[str, None] = {}
        for anchor in self._anchors:
            for text in anchor.checkpoints():
                seen.setdefault(text, None)
        return list(seen)

    # -- proofs and entries -----------------------------------------------------------

    def inclusion(self, index: int, size: int) -> dict[str, Any]:
        self._bounds(size)
        if not 0 <= index < size:
            raise InvalidInput(f"index must be below size {size}", rule="audit.index")
        proof = inclusion_proof(index, size, self._leaves, cache=self._cache)
        leaf = self._leaves(index, index + 1)[0]
        return {"index": index, "size": size, "leaf_hash": leaf.hex(),
                "proof": [h.hex() for h in proof]}

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        self._bounds(second)
        if not 0 <= first <= second:
            raise InvalidInput(f"from must be between 0 and to ({second})", rule="audit.size")
        proof = consistency_proof(first, second, self._leaves, cache=self._cache)
        return {"from": first, "to": second, "proof": [h.hex() for h in proof]}

    def _bounds(self, size: int) -> None:
        current, _ = self.head()
        if not 0 < size <= current:
            raise InvalidInput(f"size must be between 1 and {current}", rule="audit.size")

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[dict[str, Any]]:
        """Stored rows as exported: the hashed record plus its ``leaf_hash`` (hex)."""
        position = start
        while end is None or position < end:
            upper = position + 5000 if end is None else min(end, position + 5000)
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(t.events).where(t.events.c.idx >= position, t.events.c.idx < upper)
                    .order_by(t.events.c.idx)
                ).all()
            if not rows:
                return
            for row in rows:
                yield {**row_to_event(row).record(), "leaf_hash": bytes(row.leaf_hash).hex()}
            position = int(rows[-1].idx) + 1

    # -- verification, export, evidence ----------------------------------------------

    def verify(self, anchored: Sequence[str] | None = None,
               witnesses: Sequence[tuple[str, str]] = ()) -> VerifyReport:
        """Verify the stored log against every anchored checkpoint, ``anchored`` (read from
        other anchors by the caller) and the ``witnesses`` (name, checkpoint text)."""
        notes: list[str] = []
        extra: list[str] = []
        if anchored is not None:
            extra, notes = anchored_within(anchored, None)
        # checkpoints read again after the rows: announcements among them are not beyond
        report = verify_log(self.entries(), [*extra, *self.checkpoints()], self.verifiers,
                            self.origin, witnesses=witnesses,
                            later_checkpoints=self.checkpoints)
        report.notes.extend(notes)
        return report

    def export(self, out: Path, fmt: str = "jsonl") -> Path:
        return write_export(out, fmt, self.entries(), self.checkpoints(), self.verifier_keys,
                            later=self.checkpoints)

    def evidence(self, incident: str, out: Path,
                 serving_catalog: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the incident's evidence zip; ``serving_catalog`` describes today's catalog."""
        self.checkpoint()
        indices = [e["index"] for e in self.entries() if e["incident"] == incident]
        if not indices:
            raise NotFound(f"no events for incident {incident}", rule="incident.not_found")
        summary = build_evidence_zip(
            out, incident, self.entries(), self.checkpoints(), self.verifier_keys,
            incident_indices=indices, origin=self.origin,
            created_at=self._clock.now().isoformat(), serving_catalog=serving_catalog)
        return {"incident": incident, "path": str(out), "events": len(indices),
                "summary": str(summary)}


class CheckpointLoop:
    """Signs a checkpoint at most a second after new entries arrive."""

    def __init__(self, audit: AuditLog, interval: float = 1.0,
                 before: Callable[[], object] | None = None) -> None:
        self._audit = audit
        self._interval = interval
        self._before = before  # work whose events belong in the next checkpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="breakglass-checkpoints",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._before is not None:
                try:
                    self._before()
                except Exception:
                    log.exception("work before the checkpoint failed")
            try:
                self._audit.checkpoint()
            except AuditError as exc:
                log.exception("checkpoint refused", error=str(exc))
            except Exception:
                log.exception("checkpoint failed")
