"""Small ports the service layer depends on."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken

from breakglass.domain.errors import AuditError


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class SecretBox:
    """Encrypts minted credentials while they wait to be fetched once."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key

    def derive_key(self, purpose: str) -> bytes:
        """A key for another purpose (e.g. web form tokens), derived from this one so a
        fleet sharing ``BREAKGLASS_SECRET_KEY`` shares it, and independent of it."""
        return hmac.new(self._key, f"breakglass:{purpose}".encode(), hashlib.sha256).digest()

    @staticmethod
    def new_key() -> bytes:
        return Fernet.generate_key()

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, ciphertext: bytes) -> bytes:
        try:
            return self._fernet.decrypt(ciphertext)
        except InvalidToken as exc:
            raise AuditError("stored credential cannot be decrypted with this broker key") from exc
