"""Signed tree heads in the C2SP ``tlog-checkpoint`` and ``signed-note`` formats.

A checkpoint is a signed note whose text is::

    <origin>
    <tree size, decimal>
    <root hash, base64>

followed by a blank line and one line per signature,
``— <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>``.
The key hash is the first four bytes of
``SHA-256(key name || 0x0A || 0x01 || public key)``, and a verifier key is
written ``<name>+<key hash, hex>+<base64(0x01 || public key)>``. Because the
format is the one Go's ``golang.org/x/mod/sumdb/note`` and the transparency
tooling read, a checkpoint published here can be checked without breakglass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from breakglass.audit.merkle import HASH_SIZE, verify_consistency
from breakglass.domain.errors import AuditError

ED25519_ALG = 0x01
SIGNATURE_PREFIX = "\u2014 "
_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        root = base64.b64encode(self.root).decode()
        return "".join(f"{line}\n" for line in (self.origin, self.size, root, *self.extensions))


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuditError(f"checkpoint {what} is not base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise AuditError(f"checkpoint {what} is not canonical base64")
    return raw


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise AuditError(f"key name {name!r} must be non-empty, without spaces or '+'")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key hash that tags this key's signatures."""
    material = key_name.encode() + b"\n" + bytes([ED25519_ALG]) + _raw_public(public_key)
    return hashlib.sha256(material).digest()[:4]


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey, key_name: str) -> str:
    """The verifier key (vkey) line, ``<name>+<hash hex>+<base64(0x01 || key)>``."""
    _check_name(key_name)
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    encoded = base64.b64encode(bytes([ED25519_ALG]) + _raw_public(public)).decode()
    return f"{key_name}+{key_hash(key_name, public).hex()}+{encoded}"


def parse_vkey(text: str) -> tuple[str, Ed25519PublicKey]:
    """The key name and public key of a vkey line; ``AuditError`` if malformed."""
    parts = text.strip().split("+", 2)  # the base64 key may itself hold a '+'
    if len(parts) != 3:
        raise AuditError("a verifier key is <name>+<hash>+<key>")
    name, hash_hex, encoded = parts
    _check_name(name)
    raw = _b64decode(encoded, "verifier key")
    if len(raw) != 33 or raw[0] != ED25519_ALG:
        raise AuditError("verifier key is not an Ed25519 key")
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_hash(name, public).hex() != hash_hex:
        raise AuditError("verifier key hash does not match its name and key")
    return name, public


def sign_checkpoint(
    origin: str,
    size: int,
    root: bytes,
    private_key: Ed25519PrivateKey,
    key_name: str,
    extensions: Sequence[str] = (),
) -> str:
    """A signed checkpoint note for the tree of ``size`` leaves with ``root``."""
    _check_name(key_name)
    if not origin or "\n" in origin or origin != origin.strip() or _CONTROL.search(origin):
        raise AuditError("checkpoint origin must be one non-empty line")
    if size < 0 or len(root) != HASH_SIZE:
        raise AuditError("checkpoint needs a size >= 0 and a 32-byte root")
    if any(not e or "\n" in e or _CONTROL.search(e) for e in extensions):
        raise AuditError("checkpoint extension lines must be non-empty single lines")
    return sign_note(
        Checkpoint(origin, size, root, tuple(extensions)).body(), private_key, key_name
    )


def sign_note(text: str, private_key: Ed25519PrivateKey, key_name: str) -> str:
    """A signed note: ``text`` (ending in a newline), a blank line, one signature line."""
    _check_name(key_name)
    if not text.endswith("\n") or "\n\n" in text or _CONTROL.search(text):
        raise AuditError("note text must be non-empty lines, each ending in a newline")
    signature = private_key.sign(text.encode())
    tagged = base64.b64encode(key_hash(key_name, private_key.public_key()) + signature).decode()
    return f"{text}\n{SIGNATURE_PREFIX}{key_name} {tagged}\n"


def _split_note(text: str) -> tuple[str, list[str]]:
    if _CONTROL.search(text):
        raise AuditError("checkpoint holds control characters")
    cut = text.rfind("\n\n")
    if cut < 0 or not text.endswith("\n"):
        raise AuditError("checkpoint is not a signed note (no blank line before signatures)")
    body, signatures = text[: cut + 1], text[cut + 2 :].splitlines()
    if not signatures:
        raise AuditError("checkpoint carries no signature")
    return body, signatures


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint in a note, without checking any signature."""
    body, _ = _split_note(text)
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise AuditError("checkpoint body needs origin, size and root lines")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise AuditError("checkpoint origin is empty")
    if not _SIZE.fullmatch(size_text):
        raise AuditError(f"checkpoint size {size_text!r} is not a decimal number")
    root = _b64decode(root_text, "root hash")
    if len(root) != HASH_SIZE:
        raise AuditError("checkpoint root hash is not 32 bytes")
    if any(not e for e in extensions):
        raise AuditError("checkpoint has an empty extension line")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


@dataclass(frozen=True)
class Verifier:
    """One verifier key: the name its signatures carry and its Ed25519 public key."""

    name: str
    key: Ed25519PublicKey

    @property
    def tag(self) -> bytes:
        return key_hash(self.name, self.key)

    def text(self) -> str:
        return public_key_text(self.key, self.name)


@dataclass(frozen=True)
class Verifiers:
    """The keys a log's checkpoints may be signed by: its signing key first, then the keys
    it was signed by before a rotation. Written one vkey per line."""

    keys: tuple[Verifier, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise AuditError("no verifier key given")

    @classmethod
    def of(cls, key_name: str, *keys: Ed25519PrivateKey | Ed25519PublicKey) -> Verifiers:
        found: dict[str, Verifier] = {}
        for key in keys:
            public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
            verifier = Verifier(key_name, public)
            found.setdefault(verifier.text(), verifier)
        return cls(tuple(found.values()))

    @classmethod
    def parse(cls, text: str) -> Verifiers:
        """One vkey per line; blank lines and lines starting with ``#`` are skipped."""
        found: dict[str, Verifier] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                verifier = Verifier(*parse_vkey(line))
            except AuditError as exc:
                raise AuditError(f"verifier key on line {number}: {exc}") from exc
            found.setdefault(verifier.text(), verifier)
        return cls(tuple(found.values()))

    def __add__(self, other: Verifiers) -> Verifiers:
        found = {v.text(): v for v in (*self.keys, *other.keys)}
        return Verifiers(tuple(found.values()))

    def text(self) -> str:
        return "".join(f"{v.text()}\n" for v in self.keys)

    def signers(self, text: str) -> tuple[str, tuple[Verifier, ...]]:
        """The text of a note and which of these keys signed it (in this order); else
        ``AuditError``.

        Signatures by other keys (witnesses, say) are ignored, as signed-note requires;
        a signature tagged with one of these keys that does not verify is refused.
        """
        body, signatures = _split_note(text)
        by_tag = {(v.name, v.tag): v for v in self.keys}
        signed: set[str] = set()  # vkeys (public keys are not hashable)
        for line in signatures:
            if not line.startswith(SIGNATURE_PREFIX):
                raise AuditError("note signature line does not start with '— '")
            name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
            raw = _b64decode(encoded, "signature")
            if len(raw) < 5:
                raise AuditError("note signature is too short")
            verifier = by_tag.get((name, raw[:4]))
            if verifier is None:
                continue
            try:
                verifier.key.verify(raw[4:], body.encode())
            except InvalidSignature as exc:
                raise AuditError(f"signature by {name} is invalid") from exc
            signed.add(verifier.text())
        if not signed:
            names = ", ".join(f"{v.name}+{v.tag.hex()}" for v in self.keys)
            raise AuditError(f"not signed by a trusted key ({names})")
        return body, tuple(v for v in self.keys if v.text() in signed)


def verify_note(text: str, public_key: Ed25519PublicKey, key_name: str) -> str:
    """The text of a note that ``key_name``'s key signed; else ``AuditError``."""
    return Verifiers.of(key_name, public_key).signers(text)[0]


def verify_checkpoint(
    text: str, keys: Verifiers, origin: str
) -> tuple[Checkpoint, tuple[Verifier, ...]]:
    """The checkpoint and which of ``keys`` signed it, if one did for ``origin``; else
    ``AuditError``."""
    _, signers = keys.signers(text)
    checkpoint = parse_checkpoint(text)
    if checkpoint.origin != origin:
        raise AuditError(f"checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint, signers


def parse_and_verify(text: str, keys: Verifiers, origin: str) -> Checkpoint:
    """The checkpoint, if one of ``keys`` signed it for ``origin``; else ``AuditError``."""
    return verify_checkpoint(text, keys, origin)[0]


class CheckpointPolicy:
    """What a signer must check before signing a new tree head."""

    @staticmethod
    def assert_can_sign(
        previous: Checkpoint | None,
        new_size: int,
        new_root: bytes,
        consistency_proof: Sequence[bytes],
    ) -> None:
        """Refuse a tree smaller than, or not an extension of, the last signed one."""
        if previous is None:
            return
        if new_size < previous.size:
            raise AuditError(
                f"refusing to sign a tree of {new_size} entries: {previous.size} already signed"
            )
        if not verify_consistency(
            previous.size, new_size, previous.root, new_root, consistency_proof
        ):
            raise AuditError(
                f"refusing to sign: the tree of {new_size} entries does not extend "
                f"the signed tree of {previous.size} entries"
            )


def _load_pem(data: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuditError(f"{source}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{source}: the checkpoint key must be Ed25519")
    return key


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key_from_env_text(text: str) -> Ed25519PrivateKey:
    """The Ed25519 key in an environment variable or secret.

    Either PEM, or the signed-note form ``PRIVATE+KEY+<name>+<hash>+<base64>``
    that Go's ``note.GenerateKey`` and the transparency tools write.
    """
    text = text.strip()
    if not text.startswith("PRIVATE+KEY+"):
        return _load_pem(text.encode() + b"\n", "checkpoint signing key")
    parts = text.split("+", 4)
    raw = _b64decode(parts[4], "private key") if len(parts) == 5 else b""
    if len(raw) != 33 or raw[0] != ED25519_ALG:
        raise AuditError("checkpoint signing key is not an Ed25519 note key")
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    if key_hash(parts[2], key.public_key()).hex() != parts[3]:
        raise AuditError("checkpoint signing key hash does not match its name and key")
    return key


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the PEM key at ``path``; ``AuditError`` if it is absent or others may read it.

    A key file that group or others may read is refused: whoever reads it
    can sign checkpoints for a rewritten log.
    """
    file = Path(path)
    if not file.exists():
        raise AuditError(f"{file}: no checkpoint key there")
    if file.stat().st_mode & 0o077:
        raise AuditError(f"{file}: checkpoint key is readable by others; chmod 600 it")
    return _load_pem(file.read_bytes(), str(file))


def load_or_create_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the PEM key at ``path`` (see :func:`load_signing_key`), creating it (mode
    0600) when absent."""
    file = Path(path)
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(_pem(key))
                out.flush()
                os.fsync(out.fileno())
            return key
    return load_signing_key(file)
