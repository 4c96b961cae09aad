"""Self-contained evidence bundles for one incident, verifiable offline.

The zip holds ``events.jsonl`` (the whole log up to the newest checkpoint,
one canonical JSON row a line), ``incident.jsonl`` (the incident's rows),
``checkpoints/<size>.txt`` (signed checkpoints), ``key.pub`` (the verifier
keys, one a line: the signing key's, then any it replaced), ``proofs.json``
(an inclusion proof of each incident row in the newest checkpoint),
``manifest.json`` (SHA-256 of every other file), ``catalog.json`` (the
catalog versions, as SHA-256 of the catalog file, that judged the incident's
requests, read from their signed rows) and ``README.txt``. It is
reproducible: the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from breakglass.audit.canonical import LEAF_HASH_FIELD, canonical_json, event_leaf_hash, read_jsonl
from breakglass.audit.checkpoint import (
    Checkpoint,
    Verifiers,
    parse_and_verify,
    parse_checkpoint,
)
from breakglass.audit.merkle import TreeState, inclusion_proof
from breakglass.audit.verify import (
    Problem,
    VerifyReport,
    anchored_within,
    verify_log,
    verify_proofs,
)
from breakglass.domain.errors import AuditError

FORMAT = "breakglass-evidence/1"

README = """Evidence bundle for incident {incident_id}

incident.jsonl holds entries {indices} of the audit log "{origin}", whose
first {size} entries checkpoints/{latest} signs. Check it with

    breakglass audit verify --evidence THIS_FILE.zip

and the verifier keys the operator publishes (compare them with key.pub,
one key a line; a log whose signing key was rotated has more than one). That
checks every file against manifest.json, the RFC 6962 tree of events.jsonl
against each C2SP checkpoint, each inclusion proof in proofs.json, and that
catalog.json names exactly the catalog versions the incident's rows record.

catalog.json lists, for each catalog version in force when a request of the
incident was made, the SHA-256 of that catalog file: compare it with the file
kept in version control, e.g. `git show COMMIT:catalog.yaml | sha256sum`.
"""


def catalog_versions(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The catalog versions the rows record, each with the requests it judged."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        payload = row.get("payload")
        version = payload.get("catalog") if isinstance(payload, Mapping) else None
        if not isinstance(version, str):
            continue
        entry = found.setdefault(version, {"sha256": version, "first_index": row.get("index"),
                                           "requests": []})
        if row.get("request_id") and row["request_id"] not in entry["requests"]:
            entry["requests"].append(row["request_id"])
    return list(found.values())


@dataclass(frozen=True)
class EvidenceSummary:
    path: Path
    tree_size: int
    root_hex: str
    incident_rows: int
    manifest_sha256: str


class _Writer:
    """Zip members with fixed timestamps, hashed as they are written."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.digests: dict[str, str] = {}

    def open(self, name: str) -> IO[bytes]:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible
        info.compress_type = zipfile.ZIP_DEFLATED
        return self.archive.open(info, "w", force_zip64=True)

    def write(self, name: str, data: bytes) -> None:
        with self.open(name) as out:
            out.write(data)
        self.digests[name] = hashlib.sha256(data).hexdigest()


def _verified_heads(
    checkpoints: Iterable[str], public_key_text: str, origin: str
) -> list[tuple[Checkpoint, str]]:
    keys = Verifiers.parse(public_key_text)
    heads = {}
    for text in checkpoints:
        head = parse_and_verify(text, keys, origin)
        heads[head.size] = (head, text)
    if not heads:
        raise AuditError("no checkpoint to anchor the evidence: sign one first")
    return [heads[size] for size in sorted(heads)]


def _write_log(
    writer: _Writer,
    events: Iterable[Mapping[str, Any]],
    latest: Checkpoint,
    wanted: set[int],
    keep_leaves: bool,
) -> tuple[list[bytes], dict[int, bytes]]:
    """Write events.jsonl up to ``latest``; return the leaf hashes and the incident lines."""
    tree = TreeState()
    leaves: list[bytes] = []
    incident: dict[int, bytes] = {}
    digest = hashlib.sha256()
    with writer.open("events.jsonl") as out:
        for row in events:
            if tree.size == latest.size:
                break
            if row.get("index") != tree.size:
                raise AuditError(f"log row {tree.size} is missing or out of order")
            leaf = event_leaf_hash(row)
            if row.get(LEAF_HASH_FIELD, leaf.hex()) != leaf.hex():
                raise AuditError(f"log row {tree.size} does not match its leaf_hash")
            line = canonical_json({**row, LEAF_HASH_FIELD: leaf.hex()}) + b"\n"
            out.write(line)
            digest.update(line)
            if tree.size in wanted:
                incident[tree.size] = line
            if keep_leaves:
                leaves.append(leaf)
            tree.append(leaf)
    writer.digests["events.jsonl"] = digest.hexdigest()
    if tree.size != latest.size or tree.root() != latest.root:
        raise AuditError(
            f"the log's first {tree.size} rows do not match the checkpoint of size "
            f"{latest.size}: run `breakglass audit verify`"
        )
    return leaves, incident


def _proofs_doc(
    wanted: list[int],
    incident: Mapping[int, bytes],
    latest: Checkpoint,
    proofs: Mapping[int, Sequence[bytes]] | None,
    leaves: list[bytes],
) -> dict[str, Any]:
    rows = [json.loads(incident[i]) for i in wanted]
    paths = {
        i: list(proofs.get(i, ()))
        if proofs is not None
        else inclusion_proof(i, latest.size, leaves)
        for i in wanted
    }
    if problems := verify_proofs(rows, paths, latest.size, latest.root):
        raise AuditError(f"inclusion proof refused: {problems[0]}")
    return {
        "tree_size": latest.size,
        "root_hash": latest.root.hex(),
        "proofs": [{"index": i, "proof": [h.hex() for h in paths[i]]} for i in wanted],
    }


def build_evidence_zip(
    out_path: str | os.PathLike[str],
    incident_id: str,
    events: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[str],
    public_key_text: str,
    proofs: Mapping[int, Sequence[bytes]] | None = None,
    *,
    incident_indices: Collection[int],
    origin: str,
    created_at: str,
    serving_catalog: Mapping[str, Any] | None = None,
) -> EvidenceSummary:
    """Write the evidence zip for ``incident_indices`` of the log ``events`` (from index 0).

    ``events`` is read once, up to the newest checkpoint. ``proofs`` (index ->
    inclusion proof in that checkpoint) are computed when not given, keeping 32
    bytes per row in memory. A log that does not match the newest checkpoint
    is refused (``AuditError``): ``breakglass audit verify`` says why.
    """
    heads = _verified_heads(checkpoints, public_key_text, origin)
    latest = heads[-1][0]
    wanted = sorted(set(incident_indices))
    if wanted and (wanted[0] < 0 or wanted[-1] >= latest.size):
        raise AuditError(
            f"incident rows must lie within the newest checkpoint (size {latest.size}): "
            "sign a checkpoint first"
        )
    target = Path(out_path)
    partial = target.with_name(target.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w") as archive:
            writer = _Writer(archive)
            leaves, incident = _write_log(writer, events, latest, set(wanted), proofs is None)
            writer.write("incident.jsonl", b"".join(incident[i] for i in wanted))
            proofs_doc = _proofs_doc(wanted, incident, latest, proofs, leaves)
            writer.write("proofs.json", json.dumps(proofs_doc, indent=2).encode() + b"\n")
            catalog_doc = {
                "in_force": catalog_versions(json.loads(incident[i]) for i in wanted),
                "serving": dict(serving_catalog) if serving_catalog is not None else None,
            }
            writer.write("catalog.json", json.dumps(catalog_doc, indent=2).encode() + b"\n")
            for head, text in heads:
                writer.write(f"checkpoints/{head.size:020d}.txt", text.encode())
            writer.write("key.pub", public_key_text.strip().encode() + b"\n")
            readme = README.format(
                incident_id=incident_id, indices=", ".join(map(str, wanted)) or "(none)",
                origin=origin, size=latest.size, latest=f"{latest.size:020d}.txt",
            )  # fmt: skip
            writer.write("README.txt", readme.encode())
            manifest = {
                "format": FORMAT, "incident_id": incident_id, "origin": origin,
                "created_at": created_at, "tree_size": latest.size,
                "root_hash": latest.root.hex(), "incident_indices": wanted,
                "files": dict(sorted(writer.digests.items())),
            }  # fmt: skip
            manifest_bytes = json.dumps(manifest, indent=2).encode() + b"\n"
            writer.write("manifest.json", manifest_bytes)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    return EvidenceSummary(target, latest.size, latest.root.hex(), len(wanted), digest)


def _manifest_problems(archive: zipfile.ZipFile, files: Mapping[str, str]) -> list[Problem]:
    present = set(archive.namelist()) - {"manifest.json"}
    found = [
        Problem(None, "manifest", f"{name} is not listed in the manifest")
        for name in sorted(present - files.keys())
    ]
    for name, want in sorted(files.items()):
        if name not in present:
            found.append(Problem(None, "manifest", f"{name} is listed but missing"))
            continue
        with archive.open(name) as member:  # streamed: events.jsonl may be large
            digest = hashlib.file_digest(cast("io.BufferedIOBase", member), "sha256")
        if digest.hexdigest() != want:
            found.append(Problem(None, "manifest", f"{name} was modified (SHA-256 differs)"))
    return found


def verify_evidence_zip(path: str | os.PathLike[str], trusted_vkey: str | None,
                        anchored: Sequence[str] | None = None,
                        witnesses: Sequence[tuple[str, str]] = ()) -> VerifyReport:
    """Check an evidence zip: manifest, log, checkpoints and every inclusion proof.

    Without ``trusted_vkey`` the bundle's own key.pub is used, which proves
    only that the bundle is self-consistent; the report's notes say so.
    ``anchored`` are checkpoints read from the write-once anchor itself: the
    bundle's log must agree with every one of them it is large enough for, and
    extend each of the ``witnesses`` (name, checkpoint text).
    """

    def fail(*problems: Problem) -> VerifyReport:  # before any row was read
        return VerifyReport(ok=False, size=0, root_hex="", problems=list(problems))

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return fail(Problem(None, "evidence", f"not a readable zip: {exc}"))
    with archive:
        try:
            manifest = json.loads(archive.read("manifest.json"))
            files: dict[str, str] = dict(manifest["files"])
            origin = str(manifest["origin"])
        except (KeyError, ValueError, TypeError) as exc:
            return fail(Problem(None, "manifest", f"manifest.json is unusable: {exc}"))
        if manifest.get("format") != FORMAT:
            return fail(Problem(None, "manifest", f"not a {FORMAT} bundle"))
        if problems := _manifest_problems(archive, files):
            return fail(*problems)
        try:
            bundled_key = archive.read("key.pub").decode().strip()
            vkey = (trusted_vkey or bundled_key).strip()
            keys = Verifiers.parse(vkey)
            checkpoints = [
                archive.read(n).decode() for n in sorted(files) if n.startswith("checkpoints/")
            ]
            notes: list[str] = []
            if anchored is not None:
                size = max((parse_checkpoint(c).size for c in checkpoints), default=0)
                kept, notes = anchored_within(anchored, size)
                checkpoints = [*kept, *checkpoints]  # the anchor wins a fork
            proofs_doc = json.loads(archive.read("proofs.json"))
            incident_rows = list(read_jsonl(archive.read("incident.jsonl").splitlines()))
        except (KeyError, ValueError, AuditError) as exc:
            return fail(Problem(None, "evidence", f"unreadable bundle: {exc}"))
        with archive.open("events.jsonl") as raw:
            report = verify_log(read_jsonl(raw), checkpoints, keys, origin,
                                witnesses=witnesses)
        report.notes.extend(notes)
        if trusted_vkey is None:
            report.notes.append("checked with the bundle's own key.pub, not a trusted key")
        elif bundled_key != vkey:
            report.notes.append("key.pub differs from the trusted keys; the trusted keys were used")
        _check_proofs(report, proofs_doc, incident_rows, manifest)
        _check_catalog(report, archive, files, incident_rows)
        report.ok = report.ok and not report.problems
        return report


def _check_proofs(
    report: VerifyReport,
    proofs_doc: Mapping[str, Any],
    incident_rows: list[Any],
    manifest: Mapping[str, Any],
) -> None:
    try:
        size, root = int(proofs_doc["tree_size"]), bytes.fromhex(proofs_doc["root_hash"])
        paths = {
            int(p["index"]): [bytes.fromhex(h) for h in p["proof"]] for p in proofs_doc["proofs"]
        }
    except (KeyError, ValueError, TypeError) as exc:
        report.problems.append(Problem(None, "proof", f"proofs.json is unreadable: {exc}"))
        return
    if size != report.anchored_size or root.hex() != report.root_hex:
        detail = f"proofs are for size {size}, not the checkpoint the log matches"
        report.problems.append(Problem(None, "proof", detail))
    rows = [r for r in incident_rows if isinstance(r, Mapping)]
    indices = sorted(r.get("index", -1) for r in rows)
    if len(rows) != len(incident_rows) or indices != sorted(manifest["incident_indices"]):
        detail = "incident.jsonl does not hold exactly the incident's rows"
        report.problems.append(Problem(None, "proof", detail))
    report.problems.extend(verify_proofs(rows, paths, size, root))


def _check_catalog(report: VerifyReport, archive: zipfile.ZipFile, files: Mapping[str, str],
                   incident_rows: list[Any]) -> None:
    """catalog.json must name exactly the versions the (proven) incident rows record."""
    if "catalog.json" not in files:
        report.notes.append("no catalog.json: the bundle does not say which catalog was in force")
        return
    try:
        claimed = json.loads(archive.read("catalog.json"))["in_force"]
    except (KeyError, ValueError, TypeError) as exc:
        report.problems.append(Problem(None, "catalog", f"catalog.json is unreadable: {exc}"))
        return
    rows = [r for r in incident_rows if isinstance(r, Mapping)]
    if claimed != catalog_versions(rows):
        report.problems.append(Problem(None, "catalog", "catalog.json does not match the "
                                       "catalog versions the incident's rows record"))
