"""Durations from users: ASCII digits and units only, bounded before any arithmetic."""

from __future__ import annotations

from datetime import timedelta

import pytest

from breakglass.domain.durations import parse_duration
from breakglass.domain.errors import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text", [
    10**20, -(10**20), -1, 0, "0s", "999999999999d", "99999999d", "367d",
    "\u00b2", "\u0663m", "\uff11h",
    " ", "", "1x", "h", "1h1h1h1h1h", "1" * 400, "\uff11\uff12\uff13", True, "-5m", "5m-",
])
def test_bad_durations_are_input_refusals(text: str | int) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_duration(text)
    assert caught.value.rule == "input.duration"
    assert len(caught.value.message) < 120


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h30m", 5400), ("  2H ", 7200), ("366d", 366 * 86400),
    (600, 600), ("600", 600),
])
def test_good_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
