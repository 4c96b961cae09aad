"""The report as one self-contained HTML page (Jinja2 template, matplotlib charts)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from breakglass.metrics import charts

_env = Environment(loader=PackageLoader("breakglass.metrics", "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def human_seconds(value: float | None) -> str:
    """``93.0`` -> ``1m 33s``; ``108000`` -> ``30h 00m``; None -> ``-``."""
    if value is None:
        return "-"
    seconds = round(value)
    if seconds < 60:
        return f"{value:g}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:g}%"


def moment(value: str) -> str:
    """An ISO time as ``2026-11-23 20:20 UTC``."""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


_drawing = threading.Lock()
_env.filters["secs"] = human_seconds
_env.filters["pct"] = percent
_env.filters["moment"] = moment


def render_html(report: dict[str, Any]) -> str:
    with _drawing:  # matplotlib's rc settings are process-wide: one drawing at a time
        figures = {
            "activation": charts.activation_chart(report["activation"]["series"]),
            "violations": charts.violations_chart(report["policy_violations"]["by_rule"]),
            "ttl": charts.ttl_chart(report["ttl_compliance"]["by_zone"]),
            "reviews": charts.review_chart(report["review_closure"]["items"]),
        }
    return _env.get_template("report.html").render(r=report, charts=figures)
