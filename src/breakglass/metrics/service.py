"""The report handler: a window in, the seven metrics out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from breakglass.catalog.loader import LoadedCatalog
from breakglass.domain.durations import parse_duration
from breakglass.domain.errors import InvalidInput
from breakglass.metrics.report import build_report
from breakglass.service.ports import Clock

DEFAULT_WINDOW = timedelta(days=7)
DEFAULT_GRACE = timedelta(seconds=60)


def parse_since(text: str | None, now: datetime) -> datetime:
    """``7d``, ``36h`` (a duration back from now) or an ISO 8601 time."""
    if not text:
        return now - DEFAULT_WINDOW
    try:
        return now - parse_duration(text)
    except InvalidInput:
        pass
    try:
        found = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"--since takes a duration (7d, 36h) or an ISO time, not {text!r}",
                           rule="input.since") from exc
    found = found if found.tzinfo is not None else found.replace(tzinfo=UTC)
    try:  # year 1 with a positive offset, say, has no UTC time
        found = found.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidInput(f"--since {text!r} is out of range", rule="input.since") from exc
    if found < now - timedelta(days=3660):
        raise InvalidInput(f"--since {text!r} is more than ten years back", rule="input.since")
    return found


class ReportService:
    def __init__(self, engine: Engine, loaded: LoadedCatalog, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._organization = loaded.catalog.organization
        self._grace = loaded.catalog.alerts.rules.late_revocation_after or DEFAULT_GRACE

    def report(self, since: str | None = None, until: datetime | None = None) -> dict[str, Any]:
        end = until or self._clock.now()
        start = parse_since(since, end)
        if start >= end:
            raise InvalidInput("the report window is empty: --since must be in the past",
                               rule="input.since")
        return build_report(self._engine, since=start, until=end, grace=self._grace,
                            organization=self._organization)
