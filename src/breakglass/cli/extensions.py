"""``breakglass extend`` and the extension side of ``approve`` / ``deny``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from breakglass.cli import render
from breakglass.cli.client import ApiClient
from breakglass.domain.durations import parse_duration
from breakglass.domain.errors import InvalidInput

Server = Annotated[str | None, typer.Option("--server", envvar="BREAKGLASS_SERVER",
                                            help="Broker URL [default: http://127.0.0.1:8080]")]
Json = Annotated[bool, typer.Option("--json", help="Print data as JSON.")]


def extend(
    request_id: str,
    ttl: Annotated[str, typer.Option("--ttl", help="Time to add to the current expiry, e.g. 15m.")],
    justification: Annotated[str, typer.Option("--justification", help="Why more time.")],
    server: Server = None,
    as_json: Json = False,
) -> None:
    """Ask for more time on active access (approved like the zone requires)."""
    try:
        parse_duration(ttl)
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from exc
    data = ApiClient(server).call("POST", f"/v1/requests/{request_id}/extensions",
                                  {"ttl": ttl, "justification": justification})
    show_extension(data, as_json)


def pending_extension(client: ApiClient, request_id: str) -> str | None:
    """The one extension waiting for approval on an active request, if there is one."""
    request = client.call("GET", f"/v1/requests/{request_id}")
    if request.get("state") != "active":
        return None
    waiting = [x["id"] for x in client.call("GET", f"/v1/requests/{request_id}/extensions")
               if x["state"] == "pending"]
    return waiting[0] if len(waiting) == 1 else None


def decide(client: ApiClient, request_id: str, extension_id: str, verb: str,
           comment: str) -> dict[str, Any]:
    path = f"/v1/requests/{request_id}/extensions/{extension_id}/{verb}"
    found: dict[str, Any] = client.call("POST", path, {"comment": comment})
    return found


def show_extension(x: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.emit_json(x)
        return
    minutes = x["ttl_seconds"] // 60
    render.out.print(render.styled((x["id"], "bold"), f" {x['state']}  +{minutes}m on "
                                   f"{x['request_id']}  requester {x['requester']}"))
    approvals = ", ".join(a["approver"] for a in x["approvals"]) or "none"
    render.out.print(f"  approvals {len(x['approvals'])}/{x['approvals_required']}: {approvals}")
    if x["state"] in ("pending", "approved"):
        render.out.print(f"  access keeps working until {x['expires_before']} meanwhile; "
                         f"approved, it ends at {x['expires_after'] or 'the new expiry'}")
    elif x["state"] == "applied":
        render.out.print(f"  expires {x['request_expires_at']} "
                         f"(in {render.remaining(x['request_expires_at'])})")
    if x.get("end_reason"):
        render.out.print(f"  {x['state']}: {x['end_reason']}")
