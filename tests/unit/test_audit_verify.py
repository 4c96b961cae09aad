"""Offline verification finds each kind of tampering at its exact position."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from breakglass.audit import (
    BadRow,
    TreeState,
    Verifiers,
    build_evidence_zip,
    canonical_json,
    event_leaf_hash,
    public_key_text,
    read_jsonl,
    seal_event,
    sign_checkpoint,
    verify_evidence_zip,
    verify_log,
)
from breakglass.audit.canonical import MAX_SAFE_INTEGER, canonical_split
from breakglass.domain.errors import AuditError

pytestmark = pytest.mark.unit

ORIGIN = "breakglass.example/audit"
NAME = "breakglass.example/audit"
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


def event(index: int, **extra: Any) -> dict[str, Any]:
    return {
        "index": index,
        "ts": f"2025-03-01T10:{index // 60 % 60:02d}:{index % 60:02d}+00:00",
        "action": "request:approval:added" if index % 3 else "grant:activated",
        "actor": f"user{index % 7}@example.com",
        "incident": "INC-7" if index % 5 == 0 else None,
        "payload": {"ttl": 3600, "roles": ["reader"], "note": "ünïcode ✓"},
        **extra,
    }


def seal_all(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recompute prev_hash and leaf_hash of every row, as a thorough forger would."""
    sealed, prev = [], None
    for row in rows:
        out = seal_event(row, prev)
        prev = bytes.fromhex(out["leaf_hash"])
        sealed.append(out)
    return sealed


def checkpoints_for(rows: list[dict[str, Any]], sizes: tuple[int, ...]) -> list[str]:
    state, texts = TreeState(), []
    for row in rows:
        state.append(event_leaf_hash(row))
        if state.size in sizes:
            texts.append(sign_checkpoint(ORIGIN, state.size, state.root(), KEY, NAME))
    return texts


SIZES = (10, 20, 30, 40)
LOG = seal_all([event(i) for i in range(40)])
CHECKPOINTS = checkpoints_for(LOG, SIZES)


def verify(rows: list[Any], checkpoints: list[str] = CHECKPOINTS, **kw: Any) -> Any:
    return verify_log(rows, checkpoints, Verifiers.of(NAME, PUBLIC), ORIGIN, **kw)


def first(report: Any) -> tuple[int | None, str]:
    assert not report.ok
    return report.problems[0].index, report.problems[0].kind


def test_an_untouched_log_verifies() -> None:
    report = verify(LOG)
    assert report.ok, report.problems
    assert report.size == 40
    assert report.anchored_size == 40
    assert report.checkpoints_verified == 4
    assert report.root_hex == TreeState.from_json(_state_of(LOG)).root().hex()


def _state_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    state = TreeState()
    for row in rows:
        state.append(event_leaf_hash(row))
    return state.to_json()


@pytest.mark.parametrize("k", [0, 7, 23, 39])
def test_one_flipped_byte_is_found_at_its_row(k: int) -> None:
    rows = [dict(r) for r in LOG]
    actor = rows[k]["actor"]
    rows[k]["actor"] = chr(ord(actor[0]) ^ 1) + actor[1:]
    assert first(verify(rows)) == (k, "leaf_hash")


@pytest.mark.parametrize("k", [0, 7, 23, 38])
def test_a_deleted_row_is_a_gap_at_its_index(k: int) -> None:
    rows = LOG[:k] + LOG[k + 1 :]
    assert first(verify(rows)) == (k, "gap")


@pytest.mark.parametrize("k", [0, 7, 23, 38])
def test_swapped_rows_are_found_at_the_first(k: int) -> None:
    rows = [*LOG[:k], LOG[k + 1], LOG[k], *LOG[k + 2 :]]
    assert first(verify(rows))[0] == k


@pytest.mark.parametrize("k", [0, 7, 23, 38])
def test_swapped_contents_under_kept_indices_are_found_at_the_first(k: int) -> None:
    rows = [dict(r) for r in LOG]
    rows[k], rows[k + 1] = {**LOG[k + 1], "index": k}, {**LOG[k], "index": k + 1}
    assert first(verify(rows)) == (k, "leaf_hash")


@pytest.mark.parametrize("k", [1, 7, 23, 39])
def test_an_inserted_forged_row_is_found_at_its_index(k: int) -> None:
    # The forger seals the row properly and chains it to the row before it.
    forged = seal_event(
        event(k, actor="mallory@example.com"), bytes.fromhex(LOG[k - 1]["leaf_hash"])
    )
    rows = [*LOG[:k], forged, *LOG[k:]]
    assert first(verify(rows)) == (k, "out_of_order")


def test_a_forged_row_renumbering_the_rest_is_caught_by_the_checkpoint() -> None:
    rows = [*LOG[:23], event(23, actor="mallory@example.com"), *LOG[23:]]
    rows = seal_all([{**r, "index": i} for i, r in enumerate(rows)])
    report = verify(rows)
    assert first(report) == (20, "checkpoint")
    assert "size 30" in report.problems[0].detail


@pytest.mark.parametrize("cut", [1, 5, 10, 39])
def test_a_truncated_tail_is_found_at_the_first_missing_index(cut: int) -> None:
    report = verify(LOG[: 40 - cut])
    assert (report.problems[-1].index, report.problems[-1].kind) == (40 - cut, "truncated")
    assert [p.kind for p in report.problems] == ["truncated"]


def test_rewriting_every_row_and_every_hash_is_caught_by_the_signed_checkpoint() -> None:
    rows = [dict(r) for r in LOG]
    rows[23]["actor"] = "mallory@example.com"
    rows = seal_all(rows)  # every leaf_hash and prev_hash recomputed: locally consistent
    assert verify(rows, checkpoints=[]).problems[0].kind == "unanchored"
    report = verify(rows)
    assert first(report) == (20, "checkpoint")
    assert "checkpoint of size 30" in report.problems[0].detail
    assert "from index 20" in report.problems[0].detail
    assert report.anchored_size == 20


def test_a_broken_hash_chain_is_found() -> None:
    rows = [dict(r) for r in LOG]
    rows[12] = seal_event({k: v for k, v in LOG[12].items() if k != "prev_hash"}, b"\0" * 32)
    assert first(verify(rows, checkpoints=[], require_checkpoint=False)) == (12, "chain")


def test_without_stored_leaf_hashes_the_chain_finds_the_altered_row() -> None:
    chained = [{k: v for k, v in r.items() if k != "leaf_hash"} for r in LOG]
    assert verify(chained).ok
    chained[31]["action"] = "grant:revoked"
    report = verify(chained)
    assert first(report) == (32, "chain")
    assert (30, "checkpoint") in [(p.index, p.kind) for p in report.problems]


def test_rows_without_any_hashes_are_checked_against_the_checkpoints() -> None:
    bare = [{k: v for k, v in r.items() if k not in ("leaf_hash", "prev_hash")} for r in LOG]
    assert verify(bare, checkpoints=checkpoints_for(bare, SIZES)).ok
    altered = [dict(r) for r in bare]
    altered[31]["action"] = "grant:revoked"
    assert first(verify(altered, checkpoints=checkpoints_for(bare, SIZES))) == (30, "checkpoint")


def test_an_invalid_checkpoint_is_reported() -> None:
    forged = sign_checkpoint(ORIGIN, 40, bytes(32), Ed25519PrivateKey.generate(), NAME)
    report = verify(LOG, checkpoints=[*CHECKPOINTS, forged])
    assert first(report) == (None, "checkpoint_invalid")


def test_two_signed_checkpoints_of_one_size_are_a_fork() -> None:
    fork = sign_checkpoint(ORIGIN, 40, bytes(32), KEY, NAME)
    kinds = [p.kind for p in verify(LOG, checkpoints=[*CHECKPOINTS, fork]).problems]
    assert "checkpoint_fork" in kinds


def test_a_log_without_checkpoint_is_unanchored_unless_allowed() -> None:
    assert first(verify(LOG, checkpoints=[])) == (0, "unanchored")
    assert verify(LOG, checkpoints=[], require_checkpoint=False).ok
    assert verify([], checkpoints=[]).ok


def test_unreadable_jsonl_lines_are_reported_at_their_position() -> None:
    lines = [canonical_json(r).decode() for r in LOG]
    lines[17] = lines[17][:-3]
    rows = list(read_jsonl(lines))
    assert isinstance(rows[17], BadRow)
    assert first(verify(rows)) == (17, "unreadable")


def _lines(rows: list[dict[str, Any]]) -> list[bytes]:
    return [canonical_json(r) + b"\n" for r in rows]


def test_canonical_lines_verify_from_their_bytes_and_other_forms_by_re_encoding() -> None:
    assert verify(list(read_jsonl(_lines(LOG)))).ok
    assert verify(list(read_jsonl(line.decode() for line in _lines(LOG)))).ok
    loose = [json.dumps(r) + "\r\n" for r in LOG]  # spaces after separators: not canonical
    assert verify(list(read_jsonl(loose))).ok


@pytest.mark.parametrize(
    "smuggle",
    [
        pytest.param(lambda line: line.replace(b"}\n", b',"actor":"m@x"}\n'), id="dup last"),
        pytest.param(
            lambda line: line.replace(
                b'"payload":{',
                b'"payload":{"leaf_hash":"%s",' % (json.loads(line)["leaf_hash"].encode()),
            ),
            id="nested leaf_hash",
        ),
        pytest.param(lambda line: line.replace(b'"ttl":3600', b'"ttl":3601'), id="edit"),
    ],
)
def test_a_smuggled_change_in_a_line_is_found_at_its_row(smuggle: Any) -> None:
    lines = _lines(LOG)
    lines[12] = smuggle(lines[12])
    assert lines[12] != _lines(LOG)[12]
    assert first(verify(list(read_jsonl(lines)))) == (12, "leaf_hash")


def test_a_duplicate_key_that_changes_nothing_is_harmless() -> None:
    lines = _lines(LOG)
    lines[12] = lines[12].replace(b'"actor":', b'"actor":"m@x","actor":')
    rows = list(read_jsonl(lines))
    assert rows[12]["actor"] == LOG[12]["actor"]
    assert verify(rows).ok


def test_memory_does_not_grow_with_the_log() -> None:
    def rows(n: int) -> Iterator[dict[str, Any]]:
        prev = None
        for i in range(n):
            row = seal_event(event(i), prev)
            prev = bytes.fromhex(row["leaf_hash"])
            yield row

    peaks = []
    for n in (2_000, 20_000):
        tracemalloc.start()
        report = verify_log(rows(n), [], Verifiers.of(NAME, PUBLIC), ORIGIN,
                            require_checkpoint=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert report.ok
    assert peaks[1] < peaks[0] * 1.5 + 16_384


# -- canonical JSON -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_json_is_rfc_8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_keys_are_ordered_by_utf16_code_units() -> None:
    value = {"\U0001f600": 1, "\ufb01": 2, "a": {"\U00010000": 3, "\ue000": 4}}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json(value).index("\U0001f600".encode()) < canonical_json(value).index(
        "\ufb01".encode()
    )


@pytest.mark.parametrize(
    "value",
    [
        {"x": 1.5},
        {"x": float("nan")},
        {"x": 2**53},
        {"x": -(2**53)},
        {1: "int key"},
        {"x": {"y", "z"}},
        {"x": b"bytes"},
        {"x": "lone \ud800 surrogate"},
    ],
)
def test_what_json_cannot_say_exactly_is_refused(value: Any) -> None:
    with pytest.raises(AuditError):
        canonical_json(value)


def test_a_self_referring_event_is_refused() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(AuditError):
        canonical_json(looped)


# -- evidence bundles -----------------------------------------------------------------

INCIDENT = [i for i, r in enumerate(LOG) if r["incident"] == "INC-7"]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "INC-7.zip"
    summary = build_evidence_zip(
        path,
        "INC-7",
        iter(LOG),
        CHECKPOINTS,
        public_key_text(KEY, NAME),
        incident_indices=INCIDENT,
        origin=ORIGIN,
        created_at="2025-03-01T12:00:00+00:00",
    )
    assert summary.tree_size == 40
    assert summary.incident_rows == len(INCIDENT)
    return path


def test_an_evidence_bundle_verifies_offline(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        proofs = json.loads(archive.read("proofs.json"))
        readme = archive.read("README.txt").decode()
    assert {"events.jsonl", "incident.jsonl", "key.pub", "proofs.json", "manifest.json"} <= names
    assert {f"checkpoints/{n:020d}.txt" for n in SIZES} <= names
    assert "breakglass audit verify --evidence" in readme
    assert [p["index"] for p in proofs["proofs"]] == INCIDENT
    assert all(len(p["proof"]) <= 6 for p in proofs["proofs"])
    report = verify_evidence_zip(bundle, public_key_text(KEY, NAME))
    assert report.ok, report.problems
    assert report.size == 40
    assert report.notes == []
    untrusted = verify_evidence_zip(bundle, None)
    assert untrusted.ok
    assert untrusted.notes


def test_rows_without_stored_hashes_get_them_in_the_bundle(tmp_path: Path) -> None:
    bare = [{k: v for k, v in r.items() if k != "leaf_hash"} for r in LOG]
    path = tmp_path / "bare.zip"
    build_evidence_zip(
        path,
        "INC-7",
        bare,
        CHECKPOINTS,
        public_key_text(KEY, NAME),
        incident_indices=INCIDENT,
        origin=ORIGIN,
        created_at="2025-03-01T12:00:00+00:00",
    )
    with zipfile.ZipFile(path) as archive:
        rows = [json.loads(line) for line in archive.read("events.jsonl").splitlines()]
    assert [r["leaf_hash"] for r in rows] == [r["leaf_hash"] for r in LOG]
    assert verify_evidence_zip(path, public_key_text(KEY, NAME)).ok


def test_the_same_inputs_give_the_same_bundle(bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    build_evidence_zip(
        again,
        "INC-7",
        LOG,
        CHECKPOINTS,
        public_key_text(KEY, NAME),
        incident_indices=INCIDENT,
        origin=ORIGIN,
        created_at="2025-03-01T12:00:00+00:00",
    )
    assert again.read_bytes() == bundle.read_bytes()


def _rewrite(path: Path, changes: dict[str, bytes], *, fix_manifest: bool) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members.update(changes)
    if fix_manifest:
        manifest = json.loads(members["manifest.json"])
        for name, data in changes.items():
            manifest["files"][name] = hashlib.sha256(data).hexdigest()
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _tampered_events(path: Path, k: int) -> bytes:
    with zipfile.ZipFile(path) as archive:
        lines = archive.read("events.jsonl").splitlines(keepends=True)
    row = json.loads(lines[k])
    row["actor"] = "mallory@example.com"
    lines[k] = json.dumps(row).encode() + b"\n"
    return b"".join(lines)


def test_a_modified_bundle_fails_on_the_manifest(bundle: Path) -> None:
    _rewrite(bundle, {"events.jsonl": _tampered_events(bundle, 15)}, fix_manifest=False)
    report = verify_evidence_zip(bundle, public_key_text(KEY, NAME))
    assert first(report) == (None, "manifest")
    assert "events.jsonl" in report.problems[0].detail


def test_a_modified_bundle_with_a_fixed_manifest_fails_at_the_row(bundle: Path) -> None:
    _rewrite(bundle, {"events.jsonl": _tampered_events(bundle, 15)}, fix_manifest=True)
    report = verify_evidence_zip(bundle, public_key_text(KEY, NAME))
    assert first(report) == (15, "leaf_hash")


def test_a_modified_incident_row_fails_its_inclusion_proof(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        rows = [json.loads(line) for line in archive.read("incident.jsonl").splitlines()]
    rows[1]["actor"] = "mallory@example.com"
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    _rewrite(bundle, {"incident.jsonl": data}, fix_manifest=True)
    report = verify_evidence_zip(bundle, public_key_text(KEY, NAME))
    assert first(report) == (INCIDENT[1], "proof")


def test_a_bundle_signed_by_another_key_is_not_trusted(bundle: Path) -> None:
    other = public_key_text(Ed25519PrivateKey.generate(), NAME)
    report = verify_evidence_zip(bundle, other)
    assert not report.ok
    assert {p.kind for p in report.problems} >= {"checkpoint_invalid", "unanchored"}


def test_a_file_that_is_not_a_bundle_fails_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    assert first(verify_evidence_zip(junk, None)) == (None, "evidence")


def test_incident_rows_beyond_the_newest_checkpoint_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="sign a checkpoint first"):
        build_evidence_zip(
            tmp_path / "x.zip",
            "INC-7",
            LOG,
            CHECKPOINTS[:2],
            public_key_text(KEY, NAME),
            incident_indices=[35],
            origin=ORIGIN,
            created_at="2025-03-01T12:00:00+00:00",
        )
    assert not (tmp_path / "x.zip").exists()


def test_a_log_that_does_not_match_its_checkpoint_is_not_bundled(tmp_path: Path) -> None:
    rows = seal_all([{**r, "actor": "mallory@example.com"} if r["index"] == 3 else r for r in LOG])
    with pytest.raises(AuditError, match="audit verify"):
        build_evidence_zip(
            tmp_path / "x.zip",
            "INC-7",
            rows,
            CHECKPOINTS,
            public_key_text(KEY, NAME),
            incident_indices=INCIDENT,
            origin=ORIGIN,
            created_at="2025-03-01T12:00:00+00:00",
        )
    assert list(tmp_path.iterdir()) == []


_json_leaf = st.one_of(st.none(), st.booleans(), st.text(),
                       st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)


@settings(max_examples=300)
@given(record=st.dictionaries(st.sampled_from(["action", "actor", "outcome", "payload", "ts",
                                               "zone", "a", "z"]), _json),
       index=st.integers(0, MAX_SAFE_INTEGER))
def test_the_leaf_split_around_the_index_rebuilds_the_canonical_bytes(
        record: dict[str, Any], index: int) -> None:
    before, after = canonical_split(record, "index")
    assert before + str(index).encode() + after == canonical_json({**record, "index": index})
    assert before + str(index).encode() + after == rfc8785.dumps({**record, "index": index})


def test_the_leaf_split_refuses_keys_that_order_differently_in_utf16() -> None:
    with pytest.raises(AuditError, match="ASCII"):
        canonical_split({"\U0001f600": 1, "action": "x"}, "index")


def test_the_bundle_names_the_catalog_versions_its_rows_record(tmp_path: Path) -> None:
    old, new = "a" * 64, "b" * 64
    rows = [{**r, "request_id": f"req-{i % 3}",
             "payload": {**r["payload"], "catalog": old if i < 20 else new}}
            if r["incident"] == "INC-7" else r for i, r in enumerate(LOG)]
    rows = seal_all([{k: v for k, v in r.items() if k not in ("leaf_hash", "prev_hash")}
                     for r in rows])
    path = tmp_path / "versions.zip"
    build_evidence_zip(path, "INC-7", rows, checkpoints_for(rows, SIZES),
                       public_key_text(KEY, NAME), incident_indices=INCIDENT, origin=ORIGIN,
                       created_at="2025-03-01T12:00:00+00:00",
                       serving_catalog={"sha256": new, "file": "catalog.yaml"})
    with zipfile.ZipFile(path) as archive:
        doc = json.loads(archive.read("catalog.json"))
    assert doc["serving"] == {"sha256": new, "file": "catalog.yaml"}
    assert [(v["sha256"], v["first_index"]) for v in doc["in_force"]] == [(old, 0), (new, 20)]
    assert doc["in_force"][0]["requests"] == ["req-0", "req-2", "req-1"]
    assert verify_evidence_zip(path, public_key_text(KEY, NAME)).ok
    doc["in_force"][1]["sha256"] = old  # claims the old catalog judged every request
    _rewrite(path, {"catalog.json": json.dumps(doc).encode()}, fix_manifest=True)
    assert first(verify_evidence_zip(path, public_key_text(KEY, NAME))) == (None, "catalog")
