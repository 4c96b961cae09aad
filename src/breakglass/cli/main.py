"""``breakglass``: the command line. A client of the HTTP API, except the admin verbs."""

from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from breakglass.cli import render
from breakglass.cli.audit import audit_app
from breakglass.cli.audit import evidence as audit_evidence
from breakglass.cli.client import ApiClient, clear_token, save_token
from breakglass.cli.extensions import decide, extend, pending_extension, show_extension
from breakglass.cli.ops import report, review_app
from breakglass.domain import errors
from breakglass.domain.durations import parse_duration

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Emergency (break-glass) access broker for cloud AI operations.")
db_app = typer.Typer(no_args_is_help=True, help="Database administration.")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.command("evidence")(audit_evidence)

Server = Annotated[str | None, typer.Option("--server", envvar="BREAKGLASS_SERVER",
                                            help="Broker URL [default: http://127.0.0.1:8080]")]
Json = Annotated[bool, typer.Option("--json", help="Print data as JSON.")]

EXIT_CODES: list[tuple[type[errors.BreakglassError], int]] = [
    (errors.PolicyRefused, 3),
    (errors.NotFound, 4),
    (errors.InvalidInput, 2),
    (errors.CatalogError, 2),
]


def _duration(text: str) -> int:
    try:
        return int(parse_duration(text).total_seconds())
    except errors.InvalidInput as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def login(
    server: Server = None,
    dev: Annotated[str | None, typer.Option("--dev", help="Dev user (only a --dev server).")]
    = None,
) -> None:
    """Log in and store a token under your config dir."""
    client = ApiClient(server, token="")
    if dev is None:
        from breakglass.cli.oidc_login import oidc_login

        token = oidc_login(client)
    else:
        token = client.call("POST", "/v1/dev/token", {"username": dev})
    path = save_token(client.server, token)
    render.out.print(f"logged in to {client.server}; token stored in {path}")


@app.command()
def logout() -> None:
    """Remove the stored token."""
    render.out.print("logged out" if clear_token() else "no stored token")


@app.command()
def request(
    roles: Annotated[list[str], typer.Argument(help="Role names from the catalog.")],
    incident: Annotated[str, typer.Option("--incident", help="Incident or change ID.")] = "",
    reason: Annotated[str, typer.Option("--reason", help="Reason code.")] = "",
    ttl: Annotated[str | None, typer.Option("--ttl", help="e.g. 15m; zone default if unset.")]
    = None,
    justification: Annotated[str, typer.Option("--justification")] = "",
    runbook: Annotated[str | None, typer.Option("--runbook", help="Pre-approved runbook ID.")]
    = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until approved or ended.")] = False,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", help="Your OpenSSH public key (.pub) for SSH roles; without it they "
        "return a fresh key pair once.", dir_okay=False)] = None,
    workload: Annotated[str | None, typer.Option(
        "--workload", help="Override this catalog workload's service account instead.")]
    = None,
    server: Server = None,
    as_json: Json = False,
) -> None:
    """Ask for emergency access (for yourself, or for a workload with --workload)."""
    if ttl is not None:
        _duration(ttl)
    body: dict[str, Any] = {"roles": roles, "incident": incident, "reason": reason,
                            "ttl": ttl, "justification": justification, "runbook": runbook}
    if public_key is not None:
        body["public_key"] = _read_public_key(public_key)
    if workload is not None:
        body["workload"] = workload
    client = ApiClient(server)
    data = client.call("POST", "/v1/requests", body)
    while wait and data["state"] == "pending":
        time.sleep(2)
        data = client.call("GET", f"/v1/requests/{data['id']}")
    _show(data, as_json)
    if not as_json and data["state"] == "active":
        render.out.print(f"next: breakglass creds {data['id']}")


Extension = Annotated[str | None, typer.Option(
    "--extension", help="An extension of the request (default: its one pending extension).")]


@app.command()
def approve(request_id: str, comment: Annotated[str, typer.Option("--comment")] = "",
            extension: Extension = None, server: Server = None, as_json: Json = False) -> None:
    """Approve a pending request, or the pending extension of an active one."""
    client = ApiClient(server)
    extension = extension or pending_extension(client, request_id)
    if extension is not None:
        show_extension(decide(client, request_id, extension, "approvals", comment), as_json)
        return
    _show(client.call("POST", f"/v1/requests/{request_id}/approvals", {"comment": comment}),
          as_json)


@app.command()
def deny(request_id: str, comment: Annotated[str, typer.Option("--comment")],
         extension: Extension = None, server: Server = None, as_json: Json = False) -> None:
    """Deny a pending request, or the pending extension of an active one."""
    client = ApiClient(server)
    extension = extension or pending_extension(client, request_id)
    if extension is not None:
        show_extension(decide(client, request_id, extension, "denials", comment), as_json)
        return
    _show(client.call("POST", f"/v1/requests/{request_id}/denials", {"comment": comment}),
          as_json)


@app.command()
def cancel(request_id: str, server: Server = None, as_json: Json = False) -> None:
    """Withdraw your own pending request."""
    _show(ApiClient(server).call("POST", f"/v1/requests/{request_id}/cancellation", {}), as_json)


@app.command()
def revoke(request_id: str, reason: Annotated[str, typer.Option("--reason")] = "",
           server: Server = None, as_json: Json = False) -> None:
    """End active access now."""
    _show(ApiClient(server).call("POST", f"/v1/requests/{request_id}/revocations",
                                 {"reason": reason}), as_json)


@app.command("list")
def list_requests(
    state: Annotated[str | None, typer.Option("--state")] = None,
    incident: Annotated[str | None, typer.Option("--incident")] = None,
    mine: Annotated[bool, typer.Option("--mine")] = False,
    server: Server = None,
    as_json: Json = False,
) -> None:
    """List requests."""
    params = {k: v for k, v in {"state": state, "incident": incident}.items() if v}
    if mine:
        params["mine"] = "true"
    rows = ApiClient(server).call("GET", "/v1/requests", params=params)
    if as_json:
        render.emit_json(rows)
    else:
        render.request_table(rows)


@app.command()
def show(request_id: str, server: Server = None, as_json: Json = False) -> None:
    """Show one request."""
    _show(ApiClient(server).call("GET", f"/v1/requests/{request_id}"), as_json)


@app.command()
def creds(
    request_id: str,
    fmt: Annotated[str, typer.Option("--format", help="env or json")] = "env",
    server: Server = None,
) -> None:
    """Print the minted credentials. They are shown once per grant.

    env: export lines for the target's own tools. SSH certificates (and a generated
    private key) go to files in a new private directory; the exports name those files.
    With several grants, each grant's export lines go to its own file
    (``<role>.env``, mode 0600) in a new private directory, so no grant's variables
    overwrite another's; stdout exports ``BREAKGLASS_ENV_<ROLE>`` naming each file.
    """
    if fmt not in ("env", "json"):
        raise typer.BadParameter("--format must be env or json")
    data = ApiClient(server).call("POST", f"/v1/requests/{request_id}/credentials")
    found = data["credentials"]
    if fmt == "json":
        render.emit_json(found[0] if len(found) == 1 else found)
    elif len(found) == 1:
        sys.stdout.write(export_lines(found[0]))
    else:
        sys.stdout.write(env_files(found))


def export_lines(cred: dict[str, Any]) -> str:
    pairs = ssh_files(cred) if cred.get("type") == "ssh" else env_lines(cred)
    return "".join(f"export {name}={shlex.quote(str(value))}\n" for name, value in pairs)


def env_files(found: list[dict[str, Any]]) -> str:
    """One private env file per grant; returns the exports that name them."""
    folder = Path(tempfile.mkdtemp(prefix="breakglass-creds-",
                                   dir=os.environ.get("XDG_RUNTIME_DIR") or None))
    exports: list[str] = []
    used: set[str] = set()
    for cred in found:
        stem = re.sub(r"[^A-Za-z0-9]+", "_", str(cred.get("role") or cred.get("grant"))).strip("_")
        stem = stem if stem not in used else f"{stem}_{len(used)}"
        used.add(stem)
        path = folder / f"{stem.lower()}.env"
        path.touch(mode=0o600)
        path.write_text(export_lines(cred))
        exports.append(f"export BREAKGLASS_ENV_{stem.upper()}={shlex.quote(str(path))}\n")
    first = exports[0].split("=", 1)[0].removeprefix("export ")
    sys.stderr.write(f"{len(found)} grants: each one's variables are in its own file in "
                     f"{folder}; use one in a subshell, e.g.:\n  ( . \"${first}\" && psql )\n")
    return "".join(exports)


def ssh_files(cred: dict[str, Any]) -> list[tuple[str, Any]]:
    """Write an SSH credential to files ssh reads; the environment gets their paths only."""
    folder = Path(tempfile.mkdtemp(prefix="breakglass-ssh-",
                                   dir=os.environ.get("XDG_RUNTIME_DIR") or None))
    key, cert = folder / "breakglass", folder / "breakglass-cert.pub"
    pairs: list[tuple[str, Any]] = [("BREAKGLASS_SSH_CERT", cert)]
    if cred.get("private_key"):
        key.touch(mode=0o600)
        key.write_text(cred["private_key"])
        pairs.append(("BREAKGLASS_SSH_KEY", key))
    cert.touch(mode=0o600)
    cert.write_text(cred["certificate"].strip() + "\n")
    pairs += [("BREAKGLASS_SSH_USER", cred.get("user", "")),
              ("BREAKGLASS_SSH_HOST", cred.get("host", "")),
              ("BREAKGLASS_SSH_PORT", cred.get("port", 22)),
              ("BREAKGLASS_SSH_PRINCIPALS", ",".join(cred.get("principals", []))),
              ("BREAKGLASS_SSH_EXPIRES_AT", cred.get("expires_at", ""))]
    identity = '"$BREAKGLASS_SSH_KEY"' if cred.get("private_key") else "YOUR_PRIVATE_KEY"
    sys.stderr.write(
        f"ssh certificate written to {folder} (valid until {cred.get('expires_at')}); "
        f"connect with:\n  ssh -i {identity} -o CertificateFile=\"$BREAKGLASS_SSH_CERT\" "
        f"-p \"$BREAKGLASS_SSH_PORT\" \"$BREAKGLASS_SSH_USER@$BREAKGLASS_SSH_HOST\"\n")
    return pairs


def _read_public_key(path: Path) -> str:
    """The one line of a .pub file; a private key is refused here and never sent."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}",
                                 param_hint="--public-key") from exc
    if b"PRIVATE KEY" in data:
        raise typer.BadParameter(f"{path} is a private key: pass the .pub file",
                                 param_hint="--public-key")
    text = data.decode(errors="replace").strip()
    if not text or len(data) > 16 * 1024 or "\n" in text:
        raise typer.BadParameter(f"{path} is not one OpenSSH public key line",
                                 param_hint="--public-key")
    return text


def env_lines(cred: dict[str, Any]) -> list[tuple[str, Any]]:
    """Environment variables that the target's own tools read."""
    kind = cred.get("type")
    if kind == "postgres":
        return [("PGHOST", cred["host"]), ("PGPORT", cred["port"]), ("PGDATABASE", cred["dbname"]),
                ("PGUSER", cred["username"]), ("PGPASSWORD", cred["password"])]
    if kind == "redis":
        return [("REDISCLI_AUTH", cred["password"]), ("REDIS_URL", cred["url"])]
    if kind == "aws":
        return [("AWS_ACCESS_KEY_ID", cred["aws_access_key_id"]),
                ("AWS_SECRET_ACCESS_KEY", cred["aws_secret_access_key"]),
                ("AWS_SESSION_TOKEN", cred["aws_session_token"]), ("AWS_REGION", cred["region"])]
    prefix = f"BREAKGLASS_{str(cred.get('role', 'GRANT')).upper().replace('-', '_')}_"
    return [(prefix + k.upper(), v) for k, v in cred.items() if isinstance(v, str | int)]


@app.command()
def timeline(incident: str, server: Server = None, as_json: Json = False) -> None:
    """Every event of one incident, in order (both tracks)."""
    events = ApiClient(server).call("GET", f"/v1/incidents/{incident}/timeline")
    if as_json:
        render.emit_json(events)
    else:
        render.timeline_lines(events)


@app.command()
def serve(
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog YAML file.")],
    db: Annotated[str | None, typer.Option("--db", envvar="BREAKGLASS_DB")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
    dev: Annotated[bool, typer.Option("--dev", help="Local token issuer for the directory.")]
    = False,
) -> None:
    """Run the broker (HTTP API and expiry loop)."""
    from breakglass.server import run_server

    run_server(catalog, db_url=db, host=host, port=port, dev=dev)


@app.command()
def worker(
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog YAML file.")],
    db: Annotated[str, typer.Option("--db", envvar="BREAKGLASS_DB")],
) -> None:
    """Run only the expiry, retry and drift loop (for several brokers on one PostgreSQL)."""
    from breakglass.server import run_worker

    run_worker(catalog, db_url=db)


@app.command()
def inventory(
    target: Annotated[str | None, typer.Option("--target")] = None,
    server: Server = None,
    as_json: Json = False,
) -> None:
    """Standing privileges found on the targets."""
    params = {"target": target} if target else None
    rows = ApiClient(server).call("GET", "/v1/inventory", params=params)
    if as_json:
        render.emit_json(rows)
        return
    for row in rows:
        render.out.print(f"{row['target']:<20} {row['subject']:<24} {row['privilege']:<20} "
                         f"{row['detail']}")


@app.command("close-incident")
def close_incident(incident: str, server: Server = None, as_json: Json = False) -> None:
    """Revoke every active grant of an incident now."""
    data = ApiClient(server).call("POST", f"/v1/incidents/{incident}/close")
    if as_json:
        render.emit_json(data)
    else:
        render.out.print(f"revoked {len(data['revoked'])} request(s) of {incident}")


@app.command()
def demo(port: Annotated[int, typer.Option("--port")] = 8080) -> None:
    """One command: SQLite, the demo catalog, dev identity and a local PostgreSQL target."""
    from breakglass.demo import run_demo

    run_demo(port)


@app.command()
def lint(catalog: Path, fmt: Annotated[str, typer.Option("--format")] = "text") -> None:
    """Check a catalog file: schema and policy invariants (text, json or sarif)."""
    from breakglass.cli.lint import lint_catalog

    raise typer.Exit(lint_catalog(catalog, fmt))


@db_app.command("upgrade")
def db_upgrade(db: Annotated[str, typer.Option("--db", envvar="BREAKGLASS_DB")]) -> None:
    """Create or migrate the broker's schema."""
    from breakglass.storage.migrate import upgrade
    from breakglass.storage.uow import make_engine

    upgrade(make_engine(db))
    render.out.print("database is at the latest schema")


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.emit_json(data)
    else:
        render.request_summary(data)


app.add_typer(review_app, name="review")
app.command()(extend)
app.command()(report)


def main() -> None:
    """Entry point: usage errors exit 2 (click); broker errors exit by kind, one line."""
    try:
        app()
    except errors.BreakglassError as exc:
        code = next((c for cls, c in EXIT_CODES if isinstance(exc, cls)), 1)
        rule = f" [{exc.rule}]" if exc.rule not in ("error", "policy") else ""
        render.err.print(render.styled((f"error{rule}:", "red"), " ", exc.message))
        sys.exit(code)
