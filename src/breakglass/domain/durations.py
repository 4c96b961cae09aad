"""Durations as users write them: ``90s``, ``15m``, ``1h``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

from breakglass.domain.errors import InvalidInput

_PART = re.compile(r"([0-9]{1,9})([smhd])", re.ASCII)
_WHOLE = re.compile(r"^(?:[0-9]{1,9}[smhd]){1,4}$", re.ASCII)
_SECONDS = re.compile(r"^[0-9]{1,9}$", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX = timedelta(days=366)
_MAX_SECONDS = int(_MAX.total_seconds())


def parse_duration(text: str | int) -> timedelta:
    """Parse ``90s``/``15m``/``1h``/``1h30m`` (or a number of seconds) into a timedelta.

    Only ASCII digits count (``"²"`` or Arabic-Indic digits are not numbers here), and
    the range is checked on the integer before any ``timedelta`` is built, so no input
    can overflow: anything outside 1 second .. 366 days is ``input.duration``."""
    if isinstance(text, bool):
        raise InvalidInput(f"not a duration: {text!r}", rule="input.duration")
    if isinstance(text, int):
        seconds = text
    else:
        value = text.strip().lower()
        if _SECONDS.match(value):
            seconds = int(value)
        elif _WHOLE.match(value):
            seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(value))
        else:
            raise InvalidInput(
                f"not a duration: {text[:40]!r} (use e.g. 90s, 15m, 1h)", rule="input.duration"
            )
    if not 0 < seconds <= _MAX_SECONDS:
        raise InvalidInput(f"duration out of range: {str(text)[:40]!r} (1s to 366d)",
                           rule="input.duration")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact form: ``15m``, ``1h``, ``90s`` stays ``90s``."""
    seconds = int(value.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
