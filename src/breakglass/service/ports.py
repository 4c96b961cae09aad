"""Small ports the service layer depends on."""

from __future__ import annotations

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
