"""Typed settings, read once by :func:`breakglass.bootstrap.bootstrap`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from breakglass.connectors.base import MARKER_PREFIX as DEFAULT_MARKER_PREFIX
from breakglass.connectors.base import MARKER_PREFIX_PATTERN
from breakglass.domain.errors import InvalidInput


def default_state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", ".")) / ".local" / "share")
    return Path(base) / "breakglass"


@dataclass(frozen=True, slots=True)
class Settings:
    catalog: Path
    db_url: str
    dev: bool = False
    state_dir: Path = field(default_factory=lambda: default_state_dir(os.environ))
    secret_key: bytes | None = None
    expiry_interval: float = 1.0
    drift_interval: float = 60.0
    run_expiry: bool = True
    recover_grace: float = 30.0
    crash_at: str | None = None
    audit_key_text: str | None = None
    audit_key_file: Path | None = None
    audit_previous_keys: str | None = None
    anchor_dir: Path | None = None
    anchor_in_state_dir: bool = False
    anchor_s3_bucket: str | None = None
    anchor_s3_prefix: str = "breakglass"
    anchor_s3_endpoint: str | None = None
    anchor_retention_days: int = 3650
    metrics_token: str | None = None
    refusals_per_address: int = 60
    refusals_per_minute: int = 600
    marker_prefix: str = DEFAULT_MARKER_PREFIX

    @classmethod
    def from_env(
        cls,
        catalog: str | Path,
        *,
        db_url: str | None = None,
        dev: bool = False,
        env: Mapping[str, str] | None = None,
        state_dir: Path | None = None,
        anchor_in_state_dir: bool | None = None,
    ) -> Settings:
        env = os.environ if env is None else env
        state = state_dir or Path(env.get("BREAKGLASS_STATE_DIR") or default_state_dir(env))
        url = db_url or env.get("BREAKGLASS_DB") or f"sqlite:///{state / 'breakglass.db'}"
        key_text = env.get("BREAKGLASS_SECRET_KEY")
        key = key_text.encode() if key_text else None
        if key is None and not dev:
            key_file = env.get("BREAKGLASS_SECRET_KEY_FILE")
            if not key_file:
                raise InvalidInput(
                    "set BREAKGLASS_SECRET_KEY or BREAKGLASS_SECRET_KEY_FILE (a Fernet key for "
                    "credentials at rest); only --dev generates one by itself",
                    rule="settings.secret_key",
                )
            key = Path(key_file).read_bytes().strip()
        return cls(
            catalog=Path(catalog), db_url=url, dev=dev, state_dir=state, secret_key=key,
            drift_interval=float(env.get("BREAKGLASS_DRIFT_INTERVAL", "60")),
            recover_grace=float(env.get("BREAKGLASS_RECOVER_GRACE", "30")),
            crash_at=env.get("BREAKGLASS_CRASH_AT") or None,
            audit_key_text=env.get("BREAKGLASS_AUDIT_KEY") or None,
            audit_key_file=Path(env.get("BREAKGLASS_AUDIT_KEY_FILE") or state / "audit.key"),
            audit_previous_keys=_text_or_file(env, "BREAKGLASS_AUDIT_PREVIOUS_KEYS"),
            anchor_dir=Path(env.get("BREAKGLASS_ANCHOR_DIR") or state / "checkpoints"),
            anchor_in_state_dir=(_flag(env, "BREAKGLASS_ANCHOR_IN_STATE_DIR")
                                 if anchor_in_state_dir is None else anchor_in_state_dir),
            anchor_s3_bucket=env.get("BREAKGLASS_ANCHOR_S3_BUCKET") or None,
            anchor_s3_prefix=env.get("BREAKGLASS_ANCHOR_S3_PREFIX", "breakglass"),
            anchor_s3_endpoint=env.get("BREAKGLASS_ANCHOR_S3_ENDPOINT") or None,
            anchor_retention_days=int(env.get("BREAKGLASS_ANCHOR_RETENTION_DAYS", "3650")),
            metrics_token=_metrics_token(env),
            refusals_per_address=_count(env, "BREAKGLASS_ANON_REFUSALS_PER_ADDRESS", 60),
            refusals_per_minute=_count(env, "BREAKGLASS_ANON_REFUSALS_PER_MINUTE", 600),
            marker_prefix=marker_prefix(env.get("BREAKGLASS_MARKER_PREFIX")),
        )


def marker_prefix(text: str | None) -> str:
    """``BREAKGLASS_MARKER_PREFIX``: the start of every name the broker creates on a target."""
    if text is None or not text.strip():
        return DEFAULT_MARKER_PREFIX
    if not MARKER_PREFIX_PATTERN.match(text):
        raise InvalidInput(
            f"BREAKGLASS_MARKER_PREFIX must be a lowercase letter followed by at most 11 "
            f"lowercase letters, digits or '_' (e.g. 'bg_'), not {text!r}",
            rule="settings.marker_prefix")
    return text


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A yes/no setting: ``1``/``true``/``yes`` or ``0``/``false``/``no`` (unset: no)."""
    text = env.get(name, "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise InvalidInput(f"{name} must be 1, true or yes (or 0, false, no), not {text!r}",
                       rule="settings.flag")


def local_anchor_dir(settings: Settings) -> Path:
    """Where the local (file) anchor keeps its checkpoints."""
    return settings.anchor_dir or settings.state_dir / "checkpoints"


def anchor_placement_refusal(settings: Settings) -> InvalidInput | None:
    """Why the local anchor may not sit where it is configured, or None.

    A checkpoint directory inside the state directory protects nothing against
    whoever can write there: they cut the log's tail (the SQLite file is there
    too) and delete the newer checkpoints together. Allowed only when an S3
    Object Lock anchor is configured as well (it keeps what the directory loses)
    or with ``BREAKGLASS_ANCHOR_IN_STATE_DIR=1`` (a dev or demo setup).
    """
    if settings.anchor_in_state_dir or settings.anchor_s3_bucket:
        return None
    anchor, state = local_anchor_dir(settings).resolve(), settings.state_dir.resolve()
    if not anchor.is_relative_to(state):
        return None
    return InvalidInput(
        f"refusing to start: the local audit anchor BREAKGLASS_ANCHOR_DIR={anchor} is inside "
        f"the broker's state directory BREAKGLASS_STATE_DIR={state}; whoever can write there "
        "can cut the log's tail and delete the newer checkpoints, and `audit verify` would "
        "not notice. Set BREAKGLASS_ANCHOR_DIR to a directory outside it that the broker's "
        "operator cannot delete from (another owner, `chattr +a`, another host's mount), or "
        "BREAKGLASS_ANCHOR_S3_BUCKET to an S3 Object Lock bucket; for a dev or demo setup "
        "only, set BREAKGLASS_ANCHOR_IN_STATE_DIR=1", rule="settings.anchor_dir")


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number of at least 0 from ``name``, or ``default``."""
    text = env.get(name, "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise InvalidInput(f"{name} must be a whole number from 0 to 999999999, not {text!r}",
                           rule="settings.refusal_budget")
    return int(text)


def _text_or_file(env: Mapping[str, str], name: str) -> str | None:
    """The value of ``name``, or the contents of the file ``name_FILE`` names."""
    if env.get(name):
        return env[name]
    if env.get(f"{name}_FILE"):
        return Path(env[f"{name}_FILE"]).read_text()
    return None


MIN_METRICS_TOKEN_CHARS = 24


def _metrics_token(env: Mapping[str, str]) -> str | None:
    """The bearer token Prometheus presents to ``GET /metrics``, if one is configured."""
    token = (_text_or_file(env, "BREAKGLASS_METRICS_TOKEN") or "").strip()
    if not token:
        return None
    if len(token) < MIN_METRICS_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise InvalidInput(
            f"BREAKGLASS_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_CHARS} printable "
            "characters without spaces (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')", rule="settings.metrics_token")
    return token
