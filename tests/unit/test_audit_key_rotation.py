"""A rotated checkpoint key: both keys verify what each signed, the old one nothing newer."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from breakglass.audit import (
    TreeState,
    Verifiers,
    event_leaf_hash,
    parse_and_verify,
    public_key_text,
    sign_checkpoint,
    verify_log,
)
from breakglass.domain.errors import AuditError
from breakglass.domain.events import EventTag

pytestmark = pytest.mark.unit

ORIGIN = "breakglass/acme-ai"
OLD, NEW = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
ROTATION = 20  # the index of the audit:key:rotated row


def event(index: int) -> dict[str, Any]:
    row: dict[str, Any] = {"index": index, "ts": f"2026-11-24T07:00:{index % 60:02d}+00:00",
                           "actor": "uma", "action": "request:created", "payload": {"n": index}}
    if index == ROTATION:
        row.update(actor="broker", action=str(EventTag.AUDIT_KEY_ROTATED),
                   payload={"retired": public_key_text(OLD, ORIGIN),
                            "signing": public_key_text(NEW, ORIGIN), "anchored_size": 20})
    return row


LOG = [event(i) for i in range(40)]


def signed(key: Ed25519PrivateKey, size: int, rows: list[dict[str, Any]] = LOG) -> str:
    state = TreeState()
    for row in rows[:size]:
        state.append(event_leaf_hash(row))
    return sign_checkpoint(ORIGIN, size, state.root(), key, ORIGIN)


BOTH = Verifiers.of(ORIGIN, NEW, OLD)
CHECKPOINTS = [signed(OLD, 10), signed(OLD, 20), signed(NEW, 21), signed(NEW, 40)]


def test_both_keys_verify_what_each_signed() -> None:
    report = verify_log(LOG, CHECKPOINTS, BOTH, ORIGIN)
    assert report.ok, report.problems
    assert report.checkpoints_verified == 4
    assert report.anchored_size == 40


@pytest.mark.parametrize(("keys", "refused"), [
    (Verifiers.of(ORIGIN, NEW), 2), (Verifiers.of(ORIGIN, OLD), 2)])
def test_a_verifier_missing_either_key_refuses_that_keys_checkpoints(keys: Verifiers,
                                                                     refused: int) -> None:
    report = verify_log(LOG, CHECKPOINTS, keys, ORIGIN)
    assert not report.ok
    invalid = [p for p in report.problems if p.kind == "checkpoint_invalid"]
    assert len(invalid) == refused
    assert "not signed by a trusted key" in invalid[0].detail


def test_the_retired_key_signs_nothing_after_its_rotation() -> None:
    # someone who kept the old key signs the grown log, or a rewritten one
    rewritten = [*LOG[:30], *({**r, "actor": "mallory"} for r in LOG[30:])]
    for forged in (signed(OLD, 40), signed(OLD, 40, rewritten)):
        report = verify_log(LOG, [*CHECKPOINTS[:2], forged], BOTH, ORIGIN)
        assert not report.ok
        problem = report.problems[0]
        assert (problem.index, problem.kind) == (ROTATION, "retired_key")
        assert report.anchored_size == 20


def test_a_checkpoint_of_the_rotation_row_itself_may_still_carry_the_old_key() -> None:
    report = verify_log(LOG, [signed(OLD, ROTATION), signed(NEW, 40)], BOTH, ORIGIN)
    assert report.ok, report.problems


def test_verifier_keys_are_read_one_a_line_with_comments_and_repeats() -> None:
    text = (f"# breakglass/acme-ai, rotated 2026-11-24\n{public_key_text(NEW, ORIGIN)}\n\n"
            f"{public_key_text(OLD, ORIGIN)}\n{public_key_text(NEW, ORIGIN)}\n")
    keys = Verifiers.parse(text)
    assert keys == BOTH
    assert Verifiers.parse(keys.text()) == keys
    assert parse_and_verify(CHECKPOINTS[0], keys, ORIGIN).size == 10


@pytest.mark.parametrize(("text", "message"), [
    ("", "no verifier key"),
    ("# nothing but a comment\n", "no verifier key"),
    (f"{public_key_text(NEW, ORIGIN)}\nnot-a-key\n", "line 2"),
])
def test_unusable_verifier_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(AuditError, match=message):
        Verifiers.parse(text)


def test_a_signature_tagged_with_a_trusted_key_that_does_not_verify_is_refused() -> None:
    body = CHECKPOINTS[0].rpartition("\n\n")[0]
    forged = signed(OLD, 11).rpartition("\n\n")[2]  # the old key's tag, another body's signature
    with pytest.raises(AuditError, match="is invalid"):
        parse_and_verify(f"{body}\n\n{forged}", BOTH, ORIGIN)


def test_a_checkpoint_the_new_key_cosigned_stands_beside_the_retired_keys_signature() -> None:
    both_signed = signed(OLD, 40) + signed(NEW, 40).rpartition("\n\n")[2]
    report = verify_log(LOG, [*CHECKPOINTS[:2], both_signed], BOTH, ORIGIN)
    assert report.ok, report.problems
    assert report.anchored_size == 40
