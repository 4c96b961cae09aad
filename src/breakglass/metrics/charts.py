"""The report's charts, drawn by matplotlib as SVG (object API, no pyplot state).

Each chart comes back as an ``<img>``-ready data URI, so charts embed in the
HTML without inline-SVG ID clashes and without any file next to the report.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ZONE_COLOURS = {"A": "#2f7ed8", "B": "#f28f43", "C": "#c42525"}
_STYLE: dict[Any, Any] = {"svg.hashsalt": "breakglass", "font.size": 9, "axes.spines.top": False,
          "axes.spines.right": False, "svg.fonttype": "path"}


def _uri(fig: Figure) -> str:
    buf = io.BytesIO()
    with mpl.rc_context(_STYLE):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(width: float = 7.0, height: float = 3.2) -> Figure:
    with mpl.rc_context(_STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def _empty(fig: Figure, text: str) -> str:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#666666")
    return _uri(fig)


def activation_chart(series: list[dict[str, Any]]) -> str:
    """Activation time P50 (solid) and P95 (dashed) by zone, per day."""
    fig = _figure()
    if not series:
        return _empty(fig, "no activations in this window")
    with mpl.rc_context(_STYLE):
        ax = fig.add_subplot()
        days = sorted({p["day"] for p in series})
        for zone in sorted({p["zone"] for p in series}):
            points = [p for p in series if p["zone"] == zone]
            xs = [days.index(p["day"]) for p in points]
            colour = ZONE_COLOURS.get(zone, "#555555")
            ax.plot(xs, [p["p50"] for p in points], marker="o", color=colour,
                    label=f"zone {zone} P50")
            ax.plot(xs, [p["p95"] for p in points], marker="^", linestyle="--", color=colour,
                    label=f"zone {zone} P95")
        ax.set_xticks(range(len(days)), days, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(days) - 0.5)
        ax.set_ylim(bottom=0, top=max(p["p95"] or 0 for p in series) * 1.15 or 1)
        ax.set_ylabel("seconds, request to usable credential")
        ax.set_title("Activation time by zone (P50 solid, P95 dashed)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _uri(fig)


def violations_chart(by_rule: list[dict[str, Any]]) -> str:
    """Refused attempts by the rule that refused them."""
    fig = _figure(height=max(2.2, 0.35 * len(by_rule) + 1.2))
    if not by_rule:
        return _empty(fig, "no refused attempts in this window")
    with mpl.rc_context(_STYLE):
        ax = fig.add_subplot()
        rows = list(reversed(by_rule[:20]))
        ax.barh([r["rule"] for r in rows], [r["count"] for r in rows], color="#8d4653")
        for i, r in enumerate(rows):
            ax.text(r["count"], i, f" {r['count']}", va="center")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("refused attempts")
        ax.set_title("Policy violations by cause")
    return _uri(fig)


def ttl_chart(by_zone: dict[str, dict[str, Any]]) -> str:
    """Sessions that ended within their approved TTL, by zone."""
    fig = _figure(width=5.0)
    if not by_zone:
        return _empty(fig, "no ended sessions in this window")
    with mpl.rc_context(_STYLE):
        ax = fig.add_subplot()
        zones = sorted(by_zone)
        ok = [by_zone[z]["compliant"] for z in zones]
        late = [by_zone[z]["sessions"] - by_zone[z]["compliant"] for z in zones]
        labels = [f"zone {z}" for z in zones]
        ax.bar(labels, ok, color="#4caf50", label="within TTL")
        ax.bar(labels, late, bottom=ok, color="#e53935", label="past TTL")
        for i, z in enumerate(zones):
            rate = by_zone[z]["rate"]
            ax.text(i, ok[i] + late[i], f"{rate:.0f}%" if rate is not None else "-",
                    ha="center", va="bottom")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, max(a + b for a, b in zip(ok, late, strict=True)) * 1.2)
        ax.set_ylabel("sessions")
        ax.set_title("Session-duration compliance")
        ax.legend(fontsize=8)
    return _uri(fig)


def review_chart(items: list[dict[str, Any]]) -> str:
    """Hours from access end to review closure, per closed review."""
    closed = [i for i in items if i.get("closure_seconds") is not None]
    fig = _figure(height=max(2.2, 0.3 * len(closed) + 1.2))
    if not closed:
        return _empty(fig, "no closed reviews in this window")
    with mpl.rc_context(_STYLE):
        ax = fig.add_subplot()
        hours = [i["closure_seconds"] / 3600 for i in closed]
        colours = ["#e53935" if h > 24 else "#4caf50" for h in hours]
        ax.barh([i["review_id"] for i in closed], hours, color=colours)
        ax.axvline(24, color="#333333", linestyle=":", label="24 h")
        ax.set_xlabel("hours to closure")
        ax.set_title("Post-incident review closure time")
        ax.legend(fontsize=8)
    return _uri(fig)
