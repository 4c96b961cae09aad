"""Percentiles and summaries, defined once so every number is reproducible by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (NumPy's default, "type 7").

    With the values sorted as ``v[0..n-1]``, the q-quantile is read at
    position ``(n - 1) * q``: ``[2, 4]`` has P50 3 and P95 3.9.
    """
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return round(value, 3)


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "mean": round(sum(values) / len(values), 3) if values else None,
        "max": round(max(values), 3) if values else None,
    }


def ratio(part: int, whole: int) -> float | None:
    """A percentage with two decimals, or None when there is nothing to divide."""
    return round(100.0 * part / whole, 2) if whole else None
