"""``breakglass audit verify|export`` and ``breakglass evidence``."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer

from breakglass.audit import (
    Anchor,
    LocalDirectoryAnchor,
    Problem,
    S3ObjectLockAnchor,
    Verifiers,
    VerifyReport,
    anchored_within,
    read_jsonl,
    verify_evidence_zip,
    verify_log,
)
from breakglass.audit.checkpoint import parse_checkpoint
from breakglass.audit.export import FORMATS, write_export
from breakglass.cli import render
from breakglass.cli.client import ApiClient

audit_app = typer.Typer(no_args_is_help=True, help="Verify and export the audit log.")


def _vkey(key: str | None) -> str | None:
    """The verifier keys given with --key: the text itself, or the file it names."""
    if key is None:
        return None
    if not key.strip():
        raise typer.BadParameter("is empty: pass the verifier keys, or a file of them",
                                 param_hint="--key")
    path = Path(key)
    if path.is_dir():
        raise typer.BadParameter(f"{key} is a directory, not a file of verifier keys",
                                 param_hint="--key")
    if not path.exists():
        if "+" in key:  # verifier keys are <name>+<hash>+<key>; a path that is not there isn't
            return key.strip()
        raise typer.BadParameter(f"no such file: {key}", param_hint="--key")
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {key}: {exc}", param_hint="--key") from exc
    if not text:
        raise typer.BadParameter(f"{key} is empty: it holds no verifier key", param_hint="--key")
    return text


def _witnesses(paths: list[Path] | None) -> list[tuple[str, str]]:
    """``(name, checkpoint text)`` of each ``--witness`` file."""
    found = []
    for path in paths or []:
        try:
            found.append((str(path), path.read_text()))
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"{path}: {exc}", param_hint="--witness") from exc
    return found


def _require_since(report: VerifyReport, anchored: list[str], since: int) -> None:
    """``--anchor-since N`` says the anchor held a checkpoint of N entries: it must still."""
    newest = max((parse_checkpoint(text).size for text in anchored), default=0)
    if since and newest < since:
        report.problems.insert(0, Problem(newest, "missing_checkpoint", (
            f"--anchor-since {since}: the anchor holds no checkpoint of at least {since} "
            f"entries (its newest signs {newest}): checkpoints were deleted from it")))
        report.ok = False


def _save_witness(report: VerifyReport, path: Path | None) -> None:
    if path is None or not report.ok or report.newest_checkpoint is None:
        return
    path.write_text(report.newest_checkpoint)
    report.notes.append(f"saved the checkpoint of {report.anchored_size} entries to {path}: "
                        "keep it out of the broker's reach and pass it as --witness next time")


def _report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        render.emit_json({"ok": report.ok, "size": report.size, "root": report.root_hex,
                          "anchored_size": report.anchored_size, "notes": report.notes,
                          "problems": [{"index": p.index, "kind": p.kind, "detail": p.detail}
                                       for p in report.problems]})
    else:
        for problem in report.problems:
            render.out.print(f"FAIL {problem}")
        for note in report.notes:
            render.out.print(f"note: {note}")
        verdict = "verified" if report.ok else "NOT verified"
        render.out.print(f"{verdict}: {report.size} events, root {report.root_hex}, "
                         f"{report.checkpoints_verified} signed checkpoint(s), anchored up to "
                         f"{report.anchored_size}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("verify")
def verify(
    evidence: Annotated[Path | None, typer.Option("--evidence", help="An evidence zip.")] = None,
    export: Annotated[Path | None, typer.Option("--export", help="An export directory.")] = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="Trusted verifier keys, one a line (or a file of them).")]
    = None,
    catalog: Annotated[Path | None, typer.Option("--catalog")] = None,
    db: Annotated[str | None, typer.Option("--db", envvar="BREAKGLASS_DB")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    server: Annotated[str | None, typer.Option("--server", envvar="BREAKGLASS_SERVER")] = None,
    anchor: Annotated[list[str] | None, typer.Option(
        "--anchor", help="Also check against the checkpoints in this write-once anchor: "
        "s3://BUCKET/PREFIX or a directory (repeatable).")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(
        "--s3-endpoint", envvar="BREAKGLASS_ANCHOR_S3_ENDPOINT",
        help="S3 endpoint URL for s3:// anchors (default: AWS).")] = None,
    anchor_since: Annotated[int, typer.Option(
        "--anchor-since", min=0, help="Read only the anchored checkpoints of at least this many "
        "events, e.g. the size you verified last time; fails if the anchor holds none.")] = 0,
    witness: Annotated[list[Path] | None, typer.Option(
        "--witness", help="A checkpoint kept from before (--save-witness, or GET "
        "/v1/audit/checkpoint): the log must extend it (repeatable).")] = None,
    save_witness: Annotated[Path | None, typer.Option(
        "--save-witness", help="When verified, write the newest checkpoint here, for "
        "--witness next time.")] = None,
) -> None:
    """Re-derive the log's root and check every signed checkpoint.

    Online against the server (default), or offline: an evidence zip
    (--evidence), an export directory (--export), or the broker's own database
    (--catalog, --db). With --anchor the checkpoints come from the write-once
    store as well, not only from the server or the copy: whoever holds the
    database and the key cannot hide an anchored checkpoint there. A --witness
    (kept by the auditor from last time) must be extended by the log, and the
    log's own announcements of checkpoints must be matched by the ones given:
    a cut tail with its newer checkpoints deleted fails."""
    anchored = _anchored(anchor, s3_endpoint, anchor_since) if anchor else None
    witnesses = _witnesses(witness)
    report = _verify(evidence, export, catalog, db, server, _vkey(key), anchored, witnesses)
    if anchored is not None:
        _require_since(report, anchored, anchor_since)
    _save_witness(report, save_witness)
    _report(report, as_json)


def _verify(evidence: Path | None, export: Path | None, catalog: Path | None, db: str | None,
            server: str | None, vkey: str | None, anchored: list[str] | None,
            witnesses: list[tuple[str, str]]) -> VerifyReport:
    if evidence is not None:
        return verify_evidence_zip(evidence, vkey, anchored, witnesses)
    if export is not None:
        return verify_export(export, vkey, anchored, witnesses)
    if catalog is None:
        return verify_online(ApiClient(server), vkey, anchored, witnesses)
    from breakglass.bootstrap import build_audit
    from breakglass.catalog.loader import load_catalog
    from breakglass.service.ports import SystemClock
    from breakglass.settings import Settings
    from breakglass.storage.uow import make_engine

    settings = Settings.from_env(catalog, db_url=db, dev=True)
    loaded = load_catalog(catalog, require_env=False)
    engine = make_engine(settings.db_url)
    audit = build_audit(settings, engine, loaded.catalog.organization, SystemClock())
    return audit.verify(anchored, witnesses)


def _anchored(urls: list[str], s3_endpoint: str | None, since: int = 0) -> list[str]:
    """The checkpoints of at least ``since`` events in the anchors ``urls``
    (``s3://BUCKET/PREFIX`` or a directory)."""
    anchors: list[Anchor] = []
    for url in urls:
        if url.startswith("s3://"):
            import boto3  # heavy, and only S3 anchors need it

            bucket, _, prefix = url.removeprefix("s3://").partition("/")
            if not bucket:
                raise typer.BadParameter(f"{url}: no bucket", param_hint="--anchor")
            client = boto3.client("s3", endpoint_url=s3_endpoint)
            anchors.append(S3ObjectLockAnchor(bucket, prefix, client))
        else:
            path = Path(url.removeprefix("file://"))
            if not path.is_dir():
                raise typer.BadParameter(f"{url}: no such directory", param_hint="--anchor")
            anchors.append(LocalDirectoryAnchor(path))
    return [text for found in anchors for text in found.checkpoints(since)]


def verify_online(client: ApiClient, vkey: str | None, anchored: list[str] | None = None,
                  witnesses: list[tuple[str, str]] | None = None) -> VerifyReport:
    """Fetch every entry and checkpoint from the server, then verify here.

    ``anchored`` (read before the entries, so the live log is at least as large) must
    all agree with the log as well."""
    keys = Verifiers.parse(vkey or client.raw("GET", "/v1/audit/key").decode())
    checkpoints = client.call("GET", "/v1/audit/checkpoints")
    notes = [] if vkey else ["checked with the server's own keys (GET /v1/audit/key), not "
                             "trusted ones: pass --key with the keys published to you"]
    if anchored is not None:
        kept, anchor_notes = anchored_within(anchored, None)
        checkpoints = [*kept, *checkpoints]  # the anchor wins a fork
        notes += anchor_notes
    report = verify_log(_entries(client), checkpoints, keys, keys.keys[0].name,
                        witnesses=witnesses or (),
                        later_checkpoints=lambda: client.call("GET", "/v1/audit/checkpoints"))
    report.notes.extend(notes)
    return report


def _entries(client: ApiClient) -> Iterator[dict[str, Any]]:
    """Every entry in pages, the next one fetched while this one is verified."""

    def fetch(start: int) -> list[dict[str, Any]]:
        page: list[dict[str, Any]] = client.call("GET", "/v1/audit/entries",
                                                 params={"start": start})
        return page

    with ThreadPoolExecutor(max_workers=1) as pool:
        start = 0
        pending = pool.submit(fetch, start)
        while page := pending.result():
            last = page[-1].get("index") if isinstance(page[-1], dict) else None
            if type(last) is not int or last < start:
                yield from page  # a page that does not move on: verify what came, stop
                return
            start = last + 1
            pending = pool.submit(fetch, start)
            yield from page


def verify_export(directory: Path, vkey: str | None, anchored: list[str] | None = None,
                  witnesses: list[tuple[str, str]] | None = None) -> VerifyReport:
    if vkey is None and not (directory / "key.pub").is_file():
        raise typer.BadParameter(f"{directory} has no key.pub: pass --key with the verifier "
                                 "keys published to you", param_hint="--export")
    keys = Verifiers.parse(vkey or (directory / "key.pub").read_text())
    checkpoints = [p.read_text() for p in sorted((directory / "checkpoints").glob("*.txt"))]
    notes = [] if vkey else ["checked with the export's own key.pub, not trusted keys: pass "
                             "--key with the keys published to you"]
    if anchored is not None:
        with (directory / "events.jsonl").open("rb") as fh:
            size = sum(1 for _ in fh)
        kept, anchor_notes = anchored_within(anchored, size)
        checkpoints = [*kept, *checkpoints]  # the anchor wins a fork
        notes += anchor_notes
    with (directory / "events.jsonl").open("rb") as fh:
        report = verify_log(read_jsonl(fh), checkpoints, keys, keys.keys[0].name,
                            witnesses=witnesses or ())
    report.notes.extend(notes)
    return report


@audit_app.command("key")
def key(
    catalog: Annotated[Path, typer.Option("--catalog")],
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="A signing key file, e.g. the one being retired (default: the "
        "broker's, from BREAKGLASS_AUDIT_KEY[_FILE] or its state directory).")] = None,
) -> None:
    """Print the verifier keys, as GET /v1/audit/key serves them: the signing key's, then
    those in BREAKGLASS_AUDIT_PREVIOUS_KEYS. Nothing is created."""
    from breakglass.audit import load_signing_key
    from breakglass.bootstrap import audit_origin, audit_previous_keys, audit_signing_key
    from breakglass.catalog.loader import load_catalog
    from breakglass.settings import Settings

    settings = Settings.from_env(catalog, dev=True)
    origin = audit_origin(load_catalog(catalog, require_env=False).catalog.organization)
    private = (load_signing_key(key_file) if key_file is not None
               else audit_signing_key(settings, create=False))
    keys = Verifiers.of(origin, private)
    previous = audit_previous_keys(settings)
    sys.stdout.write((keys + previous if previous is not None else keys).text())


@audit_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl or ocsf")] = "jsonl",
    catalog: Annotated[Path | None, typer.Option(
        "--catalog", help="Export straight from the database (with --db) instead of the "
        "server's API.")] = None,
    db: Annotated[str | None, typer.Option("--db", envvar="BREAKGLASS_DB")] = None,
    server: Annotated[str | None, typer.Option("--server", envvar="BREAKGLASS_SERVER")] = None,
) -> None:
    """Export every event with the checkpoints and the verifier keys (for `audit verify
    --export`): from the server, or with --catalog from the database."""
    if fmt not in FORMATS:
        raise typer.BadParameter("--format must be jsonl or ocsf")
    if catalog is None:
        client = ApiClient(server)
        keys = client.raw("GET", "/v1/audit/key").decode()
        # the checkpoints first: the entries read after them cover every one
        checkpoints: list[str] = client.call("GET", "/v1/audit/checkpoints")
        entries = _entries(client)
        first = next(entries, None)  # a refusal (no token, say) comes before any file is written
        path = write_export(out, fmt, itertools.chain([first] if first else [], entries),
                            checkpoints, keys,
                            later=lambda: client.call("GET", "/v1/audit/checkpoints"))
        render.out.print(f"exported to {path}")
        return
    from breakglass.bootstrap import build_audit
    from breakglass.catalog.loader import load_catalog
    from breakglass.service.ports import SystemClock
    from breakglass.settings import Settings
    from breakglass.storage.uow import make_engine

    settings = Settings.from_env(catalog, db_url=db, dev=True)
    loaded = load_catalog(catalog, require_env=False)
    audit = build_audit(settings, make_engine(settings.db_url), loaded.catalog.organization,
                        SystemClock())
    path = audit.export(out, fmt)
    render.out.print(f"exported to {path}")
    if foreign := audit.foreign_checkpoints():
        render.out.print(f"note: {foreign} checkpoint(s) are signed by no key in key.pub; if the "
                         "audit key was rotated, set BREAKGLASS_AUDIT_PREVIOUS_KEYS as for "
                         "`serve` and export again")


def evidence(
    incident: str,
    out: Annotated[Path, typer.Option("--out", help="FILE.zip")],
    server: Annotated[str | None, typer.Option("--server", envvar="BREAKGLASS_SERVER")] = None,
) -> None:
    """Download an incident's evidence package (verifiable offline)."""
    data = ApiClient(server).raw("GET", f"/v1/incidents/{incident}/evidence")
    out.write_bytes(data)
    sys.stdout.write(f"{out}: {len(data)} bytes; verify with "
                     f"`breakglass audit verify --evidence {out} --key KEY`\n")
