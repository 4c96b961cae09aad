"""The seven  metrics on a seeded history, against numbers computed by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from breakglass.metrics.report import build_report
from breakglass.metrics.stats import percentile
from tests.fakes import FakeClock
from tests.ops_harness import Harness, make_harness
from tests.ops_history import EXPECTED, comparable, seed_history


@pytest.fixture
def seeded(sqlite: Engine, tmp_path: Path) -> Iterator[Harness]:
    logs = tmp_path / "pglog"
    logs.mkdir()
    h = make_harness(sqlite, FakeClock(), logs)
    seed_history(h)
    yield h
    h.ops.close()


def test_percentiles_interpolate_between_ranks():
    assert percentile([2, 4], 0.5) == 3.0
    assert percentile([2, 4], 0.95) == 3.9
    assert percentile([7200, 108000, 36000], 0.95) == 100800.0
    assert percentile([5], 0.95) == 5.0
    assert percentile([], 0.5) is None


def test_report_matches_the_hand_computed_numbers(seeded):
    report = seeded.ops.reports.report(since="2d")
    assert comparable(report) == EXPECTED


def test_activation_series_and_late_sessions_are_listed(seeded):
    report = seeded.ops.reports.report(since="2d")
    series = report["activation"]["series"]
    assert [(p["zone"], p["count"], p["p50"]) for p in series] == [
        ("A", 2, 3.0), ("B", 1, 61.0), ("C", 1, 93.0)]
    late = report["ttl_compliance"]["non_compliant"]
    assert [(row["zone"], row["overrun_seconds"], row["still_live"]) for row in late] == [
        ("B", 140.0, False)]
    assert report["window"]["grace"] == "1m"
    assert set(report["definitions"]) == set(EXPECTED)


def test_a_window_after_the_history_is_empty(seeded):
    later = seeded.clock.now() + timedelta(days=30)
    report = build_report(seeded.engine, since=later - timedelta(days=1), until=later,
                          grace=timedelta(seconds=60))
    assert report["activation"]["count"] == 0
    assert report["ttl_compliance"]["rate"] is None
    assert report["policy_violations"]["rate"] is None
    assert report["review_closure"]["opened"] == 0


def test_prometheus_counters_follow_the_same_history(seeded):
    text = seeded.ops.metrics.exposition().decode()
    assert 'breakglass_requests_total{environment="production",zone="A"} 2.0' in text
    assert 'breakglass_activations_total{environment="production",outcome="ok",zone="C"} 1.0' \
        in text
    assert ('breakglass_refusals_total{environment="production",rule="approval.same_team",'
            'zone="B"} 1.0') in text
    assert ('breakglass_revocations_total{environment="production",mode="expiry",outcome="ok",'
            'zone="B"} 1.0') in text
    assert ('breakglass_revocations_total{environment="production",mode="any",'
            'outcome="failed",zone="B"} 1.0') in text
    assert 'breakglass_activation_seconds_sum{environment="production",zone="C"} 93.0' in text
    assert ('breakglass_activation_overhead_seconds_sum{environment="production",zone="B"} 1.0'
            in text)
    assert 'breakglass_high_risk_actions_total{environment="production",kind="identity_change"' \
        in text
    assert 'breakglass_reviews{state="open"} 1.0' in text
    assert "breakglass_reviews_overdue 1.0" in text
