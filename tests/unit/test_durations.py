"""Durations from users: ASCII digits and units only, bounded before any arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from breakglass.domain.durations import parse_duration
from breakglass.domain.errors import InvalidInput
from breakglass.metrics.service import parse_since

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


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "0001-01-01", "1900-01-01",
                                  "\u00b2", "999999999999d", "not a time"])
def test_a_report_window_out_of_range_is_an_input_refusal(text: str) -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    with pytest.raises(InvalidInput) as caught:
        parse_since(text, now)
    assert caught.value.rule in ("input.since", "input.duration")
