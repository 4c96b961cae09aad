"""Signed checkpoints (C2SP signed-note, tlog-checkpoint), keys and the local anchor."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from breakglass.audit.anchor import LocalDirectoryAnchor
from breakglass.audit.checkpoint import (
    Checkpoint,
    CheckpointPolicy,
    Verifiers,
    key_hash,
    load_or_create_signing_key,
    load_signing_key_from_env_text,
    parse_and_verify,
    parse_checkpoint,
    parse_vkey,
    public_key_text,
    sign_checkpoint,
    sign_note,
    verify_note,
)
from breakglass.audit.merkle import consistency_proof, leaf_hash, root
from breakglass.domain.errors import AuditError

pytestmark = pytest.mark.unit

ORIGIN = "breakglass.example/audit"
NAME = "breakglass.example/audit"

# Known answers of golang.org/x/mod/sumdb/note and of the C2SP signed-note spec.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
    "KvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsY"
    "jOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def tree(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_signing_matches_the_go_note_package_byte_for_byte() -> None:
    signer = load_signing_key_from_env_text(GO_SKEY)
    assert public_key_text(signer, "PeterNeumann") == GO_VKEY
    assert sign_note(GO_TEXT, signer, "PeterNeumann") == GO_TEXT + "\n" + GO_SIG
    name, public = parse_vkey(GO_VKEY)
    assert verify_note(GO_TEXT + "\n" + GO_SIG, public, name) == GO_TEXT


def test_the_signed_note_spec_example_verifies() -> None:
    name, public = parse_vkey(SPEC_VKEY)
    assert verify_note(SPEC_NOTE, public, name) == "This is an example message.\n"
    assert key_hash(name, public).hex() == "530d903a"


def test_a_verifier_key_whose_base64_holds_a_plus_is_read() -> None:
    # transparency-dev/formats test key: its base64 part contains '+'.
    name, public = parse_vkey("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    assert name == "TEST"
    assert key_hash(name, public).hex() == "7997405c"


def test_key_hash_is_sha256_of_name_newline_type_and_key(key: Ed25519PrivateKey) -> None:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    want = hashlib.sha256(NAME.encode() + b"\n\x01" + raw).digest()[:4]
    assert key_hash(NAME, key.public_key()) == want
    vkey = public_key_text(key, NAME)
    encoded = base64.b64encode(b"\x01" + raw).decode()
    assert vkey == f"{NAME}+{want.hex()}+{encoded}"
    assert parse_vkey(vkey)[0] == NAME


def test_checkpoint_text_is_the_tlog_checkpoint_format(key: Ed25519PrivateKey) -> None:
    head = root(tree(5))
    text = sign_checkpoint(ORIGIN, 5, head, key, NAME)
    body, _, signature = text.partition("\n\n")
    assert body + "\n" == f"{ORIGIN}\n5\n{base64.b64encode(head).decode()}\n"
    assert signature.startswith(f"\u2014 {NAME} ")
    assert signature.endswith("\n")
    blob = base64.b64decode(signature.split(" ")[-1])
    assert blob[:4] == key_hash(NAME, key.public_key())
    assert len(blob) == 68
    assert parse_and_verify(text, Verifiers.of(NAME, key), ORIGIN) == Checkpoint(ORIGIN, 5, head)


def test_extension_lines_and_foreign_signatures_are_carried(key: Ed25519PrivateKey) -> None:
    text = sign_checkpoint(ORIGIN, 0, root([]), key, NAME, extensions=["ts 1700000000"])
    witness = Ed25519PrivateKey.generate()
    cosigned = (
        text + sign_note(text.partition("\n\n")[0] + "\n", witness, "witness").split("\n\n")[1]
    )
    head = parse_and_verify(cosigned, Verifiers.of(NAME, key), ORIGIN)
    assert head.extensions == ("ts 1700000000",)
    assert head.size == 0


def _replace_line(text: str, line: int, value: str) -> str:
    lines = text.split("\n")
    lines[line] = value
    return "\n".join(lines)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda t: _replace_line(t, 1, "6"), id="size changed"),
        pytest.param(
            lambda t: _replace_line(t, 2, base64.b64encode(b"\1" * 32).decode()), id="root changed"
        ),
        pytest.param(lambda t: _replace_line(t, 0, "other.example/log"), id="origin changed"),
        pytest.param(lambda t: t.replace("\n\n", "\nextra\n\n"), id="line added"),
        pytest.param(lambda t: t[: t.index("\n\n") + 2], id="signature removed"),
        pytest.param(lambda t: t.replace("\u2014 ", "- "), id="not an em dash"),
        pytest.param(lambda t: t[:-6] + "AAAA=\n", id="signature bytes changed"),
        pytest.param(lambda t: t.replace(f" {NAME} ", " someone-else "), id="other key name"),
        pytest.param(lambda t: t.rstrip("\n"), id="no final newline"),
        pytest.param(lambda t: t.replace("5\n", "5\t\n", 1), id="control character"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_a_forged_or_modified_checkpoint_is_refused(
    key: Ed25519PrivateKey, forge: Callable[[str], str]
) -> None:
    text = sign_checkpoint(ORIGIN, 5, root(tree(5)), key, NAME)
    with pytest.raises(AuditError):
        parse_and_verify(forge(text), Verifiers.of(NAME, key), ORIGIN)


def test_a_checkpoint_signed_by_another_key_is_refused(key: Ed25519PrivateKey) -> None:
    text = sign_checkpoint(ORIGIN, 5, root(tree(5)), Ed25519PrivateKey.generate(), NAME)
    with pytest.raises(AuditError, match="not signed"):
        parse_and_verify(text, Verifiers.of(NAME, key), ORIGIN)


def test_a_checkpoint_for_another_log_is_refused(key: Ed25519PrivateKey) -> None:
    text = sign_checkpoint("other.example/log", 5, root(tree(5)), key, NAME)
    with pytest.raises(AuditError, match=r"other\.example"):
        parse_and_verify(text, Verifiers.of(NAME, key), ORIGIN)


@pytest.mark.parametrize(
    "text",
    [
        "origin\n05\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 k AAAA\n",
        "origin\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 k AAAA\n",
        "origin\n5\n" + base64.b64encode(bytes(31)).decode() + "\n\n\u2014 k AAAA\n",
        "origin\n5\nnot base64!\n\n\u2014 k AAAA\n",
        "origin\n5\n\n\u2014 k AAAA\n",
    ],
)
def test_malformed_checkpoint_bodies_are_refused(text: str) -> None:
    with pytest.raises(AuditError):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    "vkey",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),
        GO_VKEY.replace("+ARpc", "+AhRpc"),
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        GO_VKEY[:-2],
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(AuditError):
        parse_vkey(vkey)


def test_bad_names_origins_and_roots_are_not_signed(key: Ed25519PrivateKey) -> None:
    with pytest.raises(AuditError):
        sign_checkpoint(ORIGIN, 1, root(tree(1)), key, "has space")
    with pytest.raises(AuditError):
        sign_checkpoint(ORIGIN, 1, root(tree(1)), key, "has+plus")
    with pytest.raises(AuditError):
        sign_checkpoint("two\nlines", 1, root(tree(1)), key, NAME)
    with pytest.raises(AuditError):
        sign_checkpoint(ORIGIN, 1, b"short", key, NAME)


def test_policy_refuses_a_smaller_or_inconsistent_tree() -> None:
    leaves = tree(20)
    signed = Checkpoint(ORIGIN, 10, root(leaves[:10]))
    CheckpointPolicy.assert_can_sign(None, 3, root(leaves[:3]), [])
    CheckpointPolicy.assert_can_sign(signed, 20, root(leaves), consistency_proof(10, 20, leaves))
    CheckpointPolicy.assert_can_sign(signed, 10, signed.root, [])
    with pytest.raises(AuditError, match="already signed"):
        CheckpointPolicy.assert_can_sign(signed, 9, root(leaves[:9]), [])
    rewritten = [*leaves[:4], leaf_hash(b"rewritten"), *leaves[5:]]
    with pytest.raises(AuditError, match="does not extend"):
        CheckpointPolicy.assert_can_sign(
            signed, 20, root(rewritten), consistency_proof(10, 20, rewritten)
        )
    with pytest.raises(AuditError, match="does not extend"):
        CheckpointPolicy.assert_can_sign(signed, 10, root(rewritten[:10]), [])


def test_signing_key_is_created_0600_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "checkpoint.pem"
    created = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_or_create_signing_key(path)
    assert public_key_text(loaded, NAME) == public_key_text(created, NAME)
    assert public_key_text(load_signing_key_from_env_text(path.read_text()), NAME) == (
        public_key_text(created, NAME)
    )


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pem"
    load_or_create_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        load_or_create_signing_key(path)


def test_a_key_that_is_not_ed25519_is_refused() -> None:
    pem = (
        generate_private_key(SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(AuditError, match="Ed25519"):
        load_signing_key_from_env_text(pem)
    with pytest.raises(AuditError):
        load_signing_key_from_env_text("not a key")
    with pytest.raises(AuditError):
        load_signing_key_from_env_text(GO_SKEY.replace("c74f20a3", "00000000"))


def test_local_anchor_is_append_only(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    leaves = tree(30)
    anchor = LocalDirectoryAnchor(tmp_path / "anchor")
    assert anchor.latest() is None
    texts = {n: sign_checkpoint(ORIGIN, n, root(leaves[:n]), key, NAME) for n in (10, 20, 30)}
    anchor.publish(texts[10], 10)
    anchor.publish(texts[20], 20)
    anchor.publish(texts[20], 20)  # a retried publish of the same text is a no-op
    assert anchor.latest() == texts[20]
    with pytest.raises(AuditError, match="20 is published"):
        anchor.publish(texts[10], 10)
    forged = sign_checkpoint(ORIGIN, 20, root(tree(20)[::-1]), key, NAME)
    with pytest.raises(AuditError, match="already published"):
        anchor.publish(forged, 20)
    with pytest.raises(AuditError, match="not for size"):
        anchor.publish(texts[30], 31)
    anchor.publish(texts[30], 30)
    assert list(anchor.checkpoints()) == [texts[10], texts[20], texts[30]]
    assert list(anchor.checkpoints(since=20)) == [texts[20], texts[30]]
    assert list(anchor.checkpoints(since=21)) == [texts[30]]
    assert list(anchor.checkpoints(since=31)) == []
    files = sorted(p.name for p in (tmp_path / "anchor").iterdir())
    assert files == [f"{n:020d}.txt" for n in (10, 20, 30)]
    for name in files:
        assert stat.S_IMODE((tmp_path / "anchor" / name).stat().st_mode) == 0o444
    if os.geteuid() != 0:  # root ignores file modes
        with pytest.raises(PermissionError):
            (tmp_path / "anchor" / files[0]).write_text("rewritten")
