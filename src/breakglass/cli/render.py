"""How the CLI shows things to people (Rich) and to programs (``--json``).

Everything the broker returns is data, never terminal instructions: the consoles
here interpret no Rich markup, and every string they render goes through
:func:`visible`, which shows control, format and line-separator characters
(ESC, CR/LF, bidi overrides, ...) as escapes. One print is one line of data,
however the text a requester typed looks. Styling is applied with
:class:`rich.text.Text` spans around such data, never by markup inside it.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from breakglass.domain.display import visible


class DataConsole(Console):
    """A console for data: no markup, no emoji codes, no control characters."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs.update(markup=False, emoji=False, highlight=False)
        return super().render_str(visible(text), **kwargs)


def styled(*parts: str | tuple[str, str | Style]) -> Text:
    """A line of data with styles: each plain part, or (part, style), shown by :func:`visible`."""
    return Text.assemble(*(
        (visible(p[0]), p[1]) if isinstance(p, tuple) else visible(p) for p in parts))


out = DataConsole(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = DataConsole(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
EXPIRY_WARNING = timedelta(minutes=5)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def remaining(expires_at: str | None) -> str:
    if not expires_at:
        return "-"
    left = datetime.fromisoformat(expires_at) - datetime.now(UTC)
    seconds = int(left.total_seconds())
    if seconds <= 0:
        return "0s"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def request_summary(r: dict[str, Any]) -> None:
    out.print(styled((r["id"], "bold"), f" {r['state']}  zone {r['zone']}  "
                     f"{', '.join(r['roles'])}"))
    out.print(f"  incident {r['incident']}  reason {r['reason']}  requester {r['requester']}")
    approvals = ", ".join(a["approver"] for a in r["approvals"]) or "none"
    out.print(f"  approvals {len(r['approvals'])}/{r['approvals_required']}: {approvals}")
    if r.get("workload"):
        out.print(f"  override of workload {r['workload']}")
    if r.get("expires_at"):
        out.print(f"  expires {r['expires_at']} (in {remaining(r['expires_at'])})")
        left = datetime.fromisoformat(r["expires_at"]) - datetime.now(UTC)
        if r["state"] == "active" and left <= EXPIRY_WARNING:
            out.print(styled((f"  expires soon: breakglass extend {r['id']} --ttl 15m "
                              "--justification ...", "yellow")))
    for g in r.get("grants", []):
        out.print(f"  grant {g['id']} on {g['target']} ({g['target_ref']}): {g['state']}")
    if r.get("end_reason"):
        out.print(f"  ended: {r['end_reason']}")


def request_table(rows: list[dict[str, Any]]) -> None:
    table = Table()
    table.add_column("id", no_wrap=True, width=15)
    for name in ("state", "zone"):
        table.add_column(name, no_wrap=True)
    table.add_column("roles", overflow="fold")
    for name in ("incident", "requester", "expires in"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(r["id"], r["state"], r["zone"], ", ".join(r["roles"]), r["incident"],
                      r["requester"], remaining(r.get("expires_at"))
                      if r["state"] == "active" else "-")
    out.print(table)


def timeline_lines(events: list[dict[str, Any]]) -> None:
    for e in events:
        detail = e.get("reason") or ""
        if e.get("rule"):
            detail = f"[{e['rule']}] {detail}"
        line = styled(
            (f"{e['index']:>6} ", "dim"), f"{e['ts'][:19]}Z ", (f"{e['actor']:<10} ", "bold"),
            (f"{e['action']:<28} ", "red" if e["outcome"] != "ok" else "green"),
            f"{e.get('request_id') or '':<15} ", f"{e.get('grant_id') or '':<18} ", detail,
        )
        out.print(line)
