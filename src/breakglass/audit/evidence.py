"""Self-contained evidence bundles for one incident, verifiable offline.

The zip holds ``events.jsonl`` (the whole log up to the newest checkpoint,
one canonical JSON row a line), ``incident.jsonl`` (the incident's rows),
``checkpoints/<size>.txt`` (signed checkpoints), ``key.pub`` (the verifier
key), ``proofs.json`` (an inclusion proof of each incident row in the newest
checkpoint), ``manifest.json`` (SHA-256 of every other file) and
``README.txt``. It is reproducible: the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from breakglass.audit.canonical import canonical_json
from breakglass.audit.checkpoint import Checkpoint, parse_and_verify, parse_vkey
from breakglass.audit.merkle import TreeState, inclusion_proof, verify_inclusion
from breakglass.audit.verify import (
    LEAF_HASH_FIELD,
    Problem,
    VerifyReport,
    event_leaf_hash,
    read_jsonl,
    verify_log,
)
from breakglass.domain.errors import AuditError

FORMAT = "breakglass-evidence/1"
_EPOCH = (1980, 1, 1, 0, 0, 0)

README = """Evidence bundle for incident {incident_id}

incident.jsonl holds entries {indices} of the audit log "{origin}"; its first
{size} entries are signed by checkpoints/{latest}. To check it:

    breakglass audit verify --evidence THIS_FILE.zip

with the verifier key the operator publishes (key.pub is the key this bundle
was made with: compare the two). That checks manifest.json against every
file, recomputes the RFC 6962 Merkle tree of events.jsonl and compares it with
each signed checkpoint (C2SP tlog-checkpoint), and checks every inclusion
proof in proofs.json.
"""


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
        info = zipfile.ZipInfo(name, date_time=_EPOCH)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return self.archive.open(info, "w", force_zip64=True)

    def write(self, name: str, data: bytes) -> None:
        with self.open(name) as out:
            out.write(data)
        self.digests[name] = hashlib.sha256(data).hexdigest()


def _verified_heads(
    checkpoints: Iterable[str], public_key_text: str, origin: str
) -> list[tuple[Checkpoint, str]]:
    key_name, public_key = parse_vkey(public_key_text)
    heads = {}
    for text in checkpoints:
        head = parse_and_verify(text, public_key, key_name, origin)
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
            line = canonical_json(row) + b"\n"
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


def _proof_rows(
    wanted: list[int],
    incident: Mapping[int, bytes],
    latest: Checkpoint,
    proofs: Mapping[int, Sequence[bytes]] | None,
    leaves: list[bytes],
) -> list[dict[str, Any]]:
    rows = []
    for index in wanted:
        leaf = event_leaf_hash(json.loads(incident[index]))
        if proofs is not None:
            path = list(proofs[index])
        else:
            path = inclusion_proof(index, latest.size, leaves)
        if not verify_inclusion(leaf, index, latest.size, path, latest.root):
            raise AuditError(f"the inclusion proof given for row {index} does not verify")
        rows.append({"index": index, "leaf_hash": leaf.hex(), "proof": [h.hex() for h in path]})
    return rows


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
) -> EvidenceSummary:
    """Write the evidence zip for ``incident_indices`` of the log ``events`` (from index 0).

    ``events`` is read once, up to the newest checkpoint's size. ``proofs``
    (index -> inclusion proof in that checkpoint) may come from the database's
    proof endpoint; when absent they are computed here, which keeps 32 bytes
    per row in memory. Refuses (``AuditError``) a log that does not match the
    newest checkpoint: run ``breakglass audit verify`` to find why.
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
    with zipfile.ZipFile(partial, "w") as archive:
        writer = _Writer(archive)
        leaves, incident = _write_log(writer, events, latest, set(wanted), proofs is None)
        writer.write("incident.jsonl", b"".join(incident[i] for i in wanted))
        proof_rows = _proof_rows(wanted, incident, latest, proofs, leaves)
        head_doc = {"tree_size": latest.size, "root_hash": latest.root.hex()}
        proofs_doc = {**head_doc, "proofs": proof_rows}
        writer.write("proofs.json", json.dumps(proofs_doc, indent=2).encode() + b"\n")
        for head, text in heads:
            writer.write(f"checkpoints/{head.size:020d}.txt", text.encode())
        writer.write("key.pub", public_key_text.strip().encode() + b"\n")
        indices = ", ".join(map(str, wanted)) or "(none)"
        readme = README.format(
            incident_id=incident_id, indices=indices, origin=origin, size=latest.size,
            latest=f"{latest.size:020d}.txt",
        )  # fmt: skip
        writer.write("README.txt", readme.encode())
        manifest = {
            "format": FORMAT,
            "incident_id": incident_id,
            "origin": origin,
            "created_at": created_at,
            **head_doc,
            "incident_indices": wanted,
            "files": dict(sorted(writer.digests.items())),
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode() + b"\n"
        writer.write("manifest.json", manifest_bytes)
    partial.replace(target)
    manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    return EvidenceSummary(target, latest.size, latest.root.hex(), len(wanted), manifest_sha256)


def _digest(archive: zipfile.ZipFile, name: str) -> str:
    digest = hashlib.sha256()
    with archive.open(name) as member:
        for chunk in iter(lambda: member.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_problems(archive: zipfile.ZipFile, files: Mapping[str, str]) -> list[Problem]:
    present = set(archive.namelist()) - {"manifest.json"}
    found = [
        Problem(None, "manifest", f"{name} is not listed in the manifest")
        for name in sorted(present - files.keys())
    ]
    for name, want in sorted(files.items()):
        if name not in present:
            found.append(Problem(None, "manifest", f"{name} is listed but missing"))
        elif _digest(archive, name) != want:
            found.append(Problem(None, "manifest", f"{name} was modified (SHA-256 differs)"))
    return found


def verify_evidence_zip(path: str | os.PathLike[str], trusted_vkey: str | None) -> VerifyReport:
    """Check an evidence zip: manifest, log, checkpoints and every inclusion proof.

    Without ``trusted_vkey`` the bundle's own key.pub is used, which proves
    only that the bundle is self-consistent; the report's notes say so.
    """

    def fail(*problems: Problem) -> VerifyReport:
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
            key_name, public_key = parse_vkey(vkey)
            checkpoints = [
                archive.read(n).decode() for n in sorted(files) if n.startswith("checkpoints/")
            ]
            proofs_doc = json.loads(archive.read("proofs.json"))
            incident_rows = list(read_jsonl(archive.read("incident.jsonl").splitlines()))
        except (KeyError, ValueError, AuditError) as exc:
            return fail(Problem(None, "evidence", f"unreadable bundle: {exc}"))
        with archive.open("events.jsonl") as raw:
            report = verify_log(read_jsonl(raw), checkpoints, public_key, key_name, origin)
        if trusted_vkey is None:
            report.notes.append("checked with the bundle's own key.pub, not a trusted key")
        elif bundled_key != vkey:
            report.notes.append("key.pub differs from the trusted key; the trusted key was used")
        _check_proofs(report, proofs_doc, incident_rows, manifest)
        report.ok = report.ok and not report.problems
        return report


def _check_proofs(
    report: VerifyReport,
    proofs_doc: Mapping[str, Any],
    incident_rows: list[Any],
    manifest: Mapping[str, Any],
) -> None:
    def problem(index: int | None, detail: str) -> None:
        report.problems.append(Problem(index, "proof", detail))

    try:
        size = int(proofs_doc["tree_size"])
        root = bytes.fromhex(proofs_doc["root_hash"])
        by_index = {int(p["index"]): p for p in proofs_doc["proofs"]}
    except (KeyError, ValueError, TypeError) as exc:
        problem(None, f"proofs.json is unreadable: {exc}")
        return
    if size != report.anchored_size or root.hex() != report.root_hex:
        problem(None, f"proofs are for size {size}, not the checkpoint the log matches")
    rows = {r.get("index"): r for r in incident_rows if isinstance(r, Mapping)}
    wanted = list(manifest.get("incident_indices", []))
    if set(rows) != set(wanted) or len(rows) != len(incident_rows):
        problem(None, "incident.jsonl does not hold exactly the incident's rows")
    for index in wanted:
        row, entry = rows.get(index), by_index.get(index)
        if row is None or entry is None:
            problem(index, "no row or no inclusion proof for this incident row")
            continue
        try:
            path = [bytes.fromhex(h) for h in entry["proof"]]
            leaf = event_leaf_hash(row)
        except (KeyError, ValueError, TypeError, AuditError) as exc:
            problem(index, f"unreadable proof or row: {exc}")
            continue
        if not verify_inclusion(leaf, index, size, path, root):
            problem(index, "inclusion proof does not verify against the checkpoint")
