"""``breakglass review ...`` and ``breakglass report``: clients of the API like the rest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from breakglass.cli import render
from breakglass.cli.client import ApiClient

review_app = typer.Typer(no_args_is_help=True,
                         help="Post-incident access reviews: list, show, complete, tasks.")

Server = Annotated[str | None, typer.Option("--server", envvar="BREAKGLASS_SERVER",
                                            help="Broker URL [default: http://127.0.0.1:8080]")]
Json = Annotated[bool, typer.Option("--json", help="Print data as JSON.")]


def _task(text: str) -> dict[str, str]:
    owner, sep, title = text.partition(":")
    if not sep or not owner.strip() or not title.strip():
        raise typer.BadParameter(f"--task takes OWNER:TITLE, not {text!r}")
    return {"owner": owner.strip(), "title": title.strip()}


def _review_lines(r: dict[str, Any]) -> None:
    out = render.out
    overdue: tuple[str | tuple[str, str], ...] = ((" overdue", "red"),) if r.get("overdue") else ()
    out.print(render.styled((r["id"], "bold"), f" {r['state']}", *overdue,
                            f"  request {r['request_id']}  incident {r['incident']}  "
                            f"zone {r['zone']}"))
    out.print(f"  requester {r['requester']}  reviewer {r['reviewer'] or 'unassigned'}  "
              f"opened {r['opened_at'][:19]}Z  due {r['due_at'][:19]}Z")
    if r.get("findings"):
        out.print(f"  findings: {r['findings']}")
    for t in r.get("tasks", []):
        closed = f" (closed by {t['closed_by']})" if t["state"] == "closed" else ""
        out.print(f"  task {t['id']} [{t['state']}] {t['owner']}: {t['title']}{closed}")
    if r.get("closure_seconds") is not None:
        out.print(f"  closed {r['closed_at'][:19]}Z after {r['closure_seconds'] / 3600:.1f} h")


def _emit(data: Any, as_json: bool) -> None:
    if as_json:
        render.emit_json(data)
    else:
        _review_lines(data)


@review_app.command("list")
def review_list(
    state: Annotated[str | None, typer.Option(
        "--state", help="open, tasks_open, closed or overdue")] = None,
    incident: Annotated[str | None, typer.Option("--incident")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only reviews assigned to me.")] = False,
    server: Server = None,
    as_json: Json = False,
) -> None:
    """List access reviews."""
    params: dict[str, str] = {k: v for k, v in {"state": state, "incident": incident}.items()
                              if v}
    if mine:
        params["mine"] = "true"
    rows = ApiClient(server).call("GET", "/v1/reviews", params=params)
    if as_json:
        render.emit_json(rows)
        return
    table = Table("id", "state", "incident", "request", "requester", "reviewer", "due",
                  "open tasks")
    for r in rows:
        state_text = r["state"] + (" (overdue)" if r["overdue"] else "")
        table.add_row(r["id"], state_text, r["incident"], r["request_id"], r["requester"],
                      r["reviewer"] or "-", r["due_at"][:16] + "Z",
                      str(sum(t["state"] == "open" for t in r["tasks"])))
    render.out.print(table)


@review_app.command("show")
def review_show(review_id: str, server: Server = None, as_json: Json = False) -> None:
    """Show one review with its findings and tasks."""
    _emit(ApiClient(server).call("GET", f"/v1/reviews/{review_id}"), as_json)


@review_app.command("complete")
def review_complete(
    review_id: str,
    findings: Annotated[str, typer.Option("--findings", help="What the review found.")],
    task: Annotated[list[str] | None, typer.Option(
        "--task", help="A corrective task as OWNER:TITLE (repeatable).")] = None,
    server: Server = None,
    as_json: Json = False,
) -> None:
    """Record the findings and corrective tasks; the review closes when no task is open."""
    tasks = [_task(t) for t in task or []]
    _emit(ApiClient(server).call("POST", f"/v1/reviews/{review_id}/completion",
                                 {"findings": findings, "tasks": tasks}), as_json)


@review_app.command("add-task")
def review_add_task(
    review_id: str,
    owner: Annotated[str, typer.Option("--owner")],
    title: Annotated[str, typer.Option("--title")],
    server: Server = None,
    as_json: Json = False,
) -> None:
    """Add a corrective task with an owner."""
    data = ApiClient(server).call("POST", f"/v1/reviews/{review_id}/tasks",
                                  {"owner": owner, "title": title})
    if as_json:
        render.emit_json(data)
    else:
        render.out.print(f"task {data['id']} for {data['owner']}: {data['title']}")


@review_app.command("close-task")
def review_close_task(
    task_id: str,
    note: Annotated[str, typer.Option("--note")] = "",
    server: Server = None,
    as_json: Json = False,
) -> None:
    """Close one corrective task (its owner or the reviewer)."""
    _emit(ApiClient(server).call("POST", f"/v1/reviews/tasks/{task_id}/closure",
                                 {"note": note}), as_json)


@review_app.command("rollup")
def review_rollup(incident: str, server: Server = None, as_json: Json = False) -> None:
    """Where every review of one incident stands."""
    data = ApiClient(server).call("GET", f"/v1/incidents/{incident}/reviews")
    if as_json:
        render.emit_json(data)
        return
    render.out.print(render.styled(
        (incident, "bold"), f": {data['reviews']} review(s), {data['closed']} closed, "
        f"{data['open']} awaiting findings, {data['tasks_open']} with open tasks, "
        f"{data['overdue']} overdue; tasks {data['tasks']['closed']}/{data['tasks']['total']} "
        "closed"))
    for item in data["items"]:
        _review_lines(item)


def report(
    since: Annotated[str, typer.Option("--since", help="7d, 36h or an ISO time.")] = "7d",
    fmt: Annotated[str, typer.Option("--format", help="json or html")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="Write to a file.")] = None,
    server: Server = None,
) -> None:
    """The program's metrics over a window, as JSON or an HTML page with charts."""
    if fmt not in ("json", "html"):
        raise typer.BadParameter("--format must be json or html")
    data = ApiClient(server).call("GET", "/v1/metrics/report", params={"since": since})
    if fmt == "html":
        from breakglass.metrics.html import render_html

        text = render_html(data)
    else:
        import json

        text = json.dumps(data, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        render.out.print(f"report written to {out}")
