"""Schema migrations with Alembic, run by ``breakglass db upgrade`` and at serve start."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

if TYPE_CHECKING:
    from alembic.config import Config

_SCRIPTS = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_KEY = 0x6267  # advisory lock id: one migrator at a time on PostgreSQL


def alembic_config() -> Config:
    from alembic.config import Config  # noqa: PLC0415 - loaded only when migrating

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command  # noqa: PLC0415 - loaded only when migrating

    cfg = alembic_config()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
