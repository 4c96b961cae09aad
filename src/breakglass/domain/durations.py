"""Durations as users write them: ``90s``, ``15m``, ``1h``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

from breakglass.domain.errors import InvalidInput

_PART = re.compile(r"(\d+)([smhd])")
_WHOLE = re.compile(r"^(?:\d+[smhd])+$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX = timedelta(days=366)


def parse_duration(text: str | int) -> timedelta:
    """Parse ``90s``/``15m``/``1h``/``1h30m`` (or a number of seconds) into a timedelta."""
    if isinstance(text, bool):
        raise InvalidInput(f"not a duration: {text!r}", rule="input.duration")
    if isinstance(text, int):
        seconds = text
    else:
        value = text.strip().lower()
        if value.isdigit():
            seconds = int(value)
        elif _WHOLE.match(value):
            seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(value))
        else:
            raise InvalidInput(
                f"not a duration: {text!r} (use e.g. 90s, 15m, 1h)", rule="input.duration"
            )
    duration = timedelta(seconds=seconds)
    if seconds <= 0 or duration > _MAX:
        raise InvalidInput(f"duration out of range: {text!r}", rule="input.duration")
    return duration


def format_duration(value: timedelta) -> str:
    """The shortest exact form: ``15m``, ``1h``, ``90s`` stays ``90s``."""
    seconds = int(value.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
