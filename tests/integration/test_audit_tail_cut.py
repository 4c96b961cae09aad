"""Whoever can write the broker's state directory cuts the log's tail and deletes the newer
checkpoints: the verifier notices from the log's own announcements or from a kept witness.

The attacker here holds what a local operator holds: the event table (SQLite file or
PostgreSQL), the local anchor directory and the signing key file. What they cannot
reach is the auditor's copy of a checkpoint from an earlier verification.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select, update

from breakglass.audit import parse_checkpoint, sign_checkpoint
from breakglass.audit.checkpoint import load_or_create_signing_key
from breakglass.bootstrap import bootstrap
from breakglass.cli.audit import verify_export
from breakglass.domain.errors import AuditError, InvalidInput
from breakglass.domain.events import EventTag
from breakglass.service.auditlog import AuditLog
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.settings import Settings, anchor_placement_refusal
from breakglass.storage import tables as t
from tests.conftest import CATALOG
from tests.integration.test_audit_tamper import build, history, rewrite_everything

BIN = Path(sys.executable).parent / "breakglass"


def rounds(broker: Broker, people, audit: AuditLog, n: int) -> list[int]:
    """``n`` rounds of activity, each ending on an anchored checkpoint; the sizes."""
    return [history(broker, people, audit, 1) for _ in range(n)]


def announcements(engine: Engine) -> list[tuple[int, int]]:
    """(row index, announced size) of each ``audit:checkpoint:published`` row."""
    with engine.connect() as conn:
        rows = conn.execute(select(t.events.c.idx, t.events.c.payload)
                            .where(t.events.c.action == EventTag.CHECKPOINT_PUBLISHED)
                            .order_by(t.events.c.idx)).all()
    return [(int(r.idx), int(r.payload["size"])) for r in rows]


def cut_rows(engine: Engine, keep: int) -> None:
    """Delete every row from ``keep`` on, and set the log head back to match."""
    with engine.begin() as conn:
        conn.execute(delete(t.events).where(t.events.c.idx >= keep))
        conn.execute(update(t.log_head).values(size=keep))
        assert conn.execute(select(func.count()).select_from(t.events)).scalar() == keep


def delete_checkpoints(anchor_dir: Path, above: int) -> None:
    """Delete the anchor's checkpoint files of more than ``above`` entries (0444 files in a
    directory the operator can write: unlink needs no write permission on the file)."""
    for path in anchor_dir.glob("*.txt"):
        if int(path.stem) > above:
            path.unlink()


def test_the_broker_announces_each_anchored_checkpoint_in_the_log(engine, tmp_path, loaded,
                                                                  clock, people):
    broker, audit = build(engine, tmp_path, loaded, clock)
    sizes = rounds(broker, people, audit, 3)
    anchored = {parse_checkpoint(c).size for c in audit.checkpoints()}
    said = announcements(engine)
    assert len(said) == 3  # one a round; the checkpoint that signs it is not announced
    for index, size in said:
        assert size in anchored
        assert index >= size
        assert index + 1 in anchored  # signed at once: the log ends on a checkpoint
    assert sizes[-1] == audit.head()[0] == max(anchored)
    audit.checkpoint()
    audit.checkpoint()
    assert audit.head()[0] == sizes[-1]  # a quiet log stays quiet
    assert audit.verify().ok


def test_deleting_the_newest_checkpoints_is_reported_by_the_rows_that_announce_them(
        engine, tmp_path, loaded, clock, people):
    broker, audit = build(engine, tmp_path, loaded, clock)
    rounds(broker, people, audit, 3)
    (index, lost), *_ = reversed(announcements(engine))
    cut_rows(engine, index + 1)  # the rows up to the announcement stay
    delete_checkpoints(tmp_path / "anchors", lost - 1)
    report = audit.verify()
    assert not report.ok
    [problem] = [p for p in report.problems if p.kind == "missing_checkpoint"]
    assert problem.index == index
    assert f"checkpoint {lost}" in problem.detail
    assert "deleted or withheld" in problem.detail
    exported = audit.export(tmp_path / "copy").parent
    assert "missing_checkpoint" in {p.kind for p in verify_export(exported, None).problems}
    restarted = build(engine, tmp_path, loaded, clock)[1]
    with pytest.raises(AuditError, match=f"announces checkpoint {lost} as anchored"):
        restarted.check_against_anchors()


@pytest.mark.parametrize("where", ["database", "export"])
def test_a_careful_cut_passes_alone_and_fails_against_the_auditors_witness(
        engine, tmp_path, loaded, clock, people, where):
    broker, audit = build(engine, tmp_path, loaded, clock)
    rounds(broker, people, audit, 2)
    witness = tmp_path / "auditor" / "witness.txt"
    witness.parent.mkdir()
    first = audit.verify()
    assert first.ok
    assert first.newest_checkpoint is not None
    witness.write_text(first.newest_checkpoint)  # what --save-witness keeps
    kept = parse_checkpoint(first.newest_checkpoint).size
    rounds(broker, people, audit, 2)
    grown = audit.verify(witnesses=[(str(witness), witness.read_text())])
    assert grown.ok, grown.problems  # an honest log extends the witness

    # the careful attacker: back to a size some checkpoint signs, every newer one deleted
    cut = kept - 1  # the round's own checkpoint, before the one that signs its announcement
    cut_rows(engine, cut)
    delete_checkpoints(tmp_path / "anchors", cut)

    def verify(*witnesses: tuple[str, str]):
        if where == "database":
            return audit.verify(witnesses=witnesses)
        out = tmp_path / f"copy-{len(witnesses)}"
        return verify_export(audit.export(out).parent, None, None, list(witnesses))

    assert verify().ok  # nothing local is left to tell
    report = verify((str(witness), witness.read_text()))
    assert not report.ok
    kinds = {p.kind: p for p in report.problems}
    assert "truncated" in kinds
    assert f"the witness {witness} signs {kept}" in kinds["truncated"].detail
    assert "missing_checkpoint" in kinds
    assert str(witness) in kinds["missing_checkpoint"].detail


def test_a_rewrite_re_signed_with_the_stolen_key_contradicts_the_witness(engine, tmp_path,
                                                                        loaded, clock, people):
    broker, audit = build(engine, tmp_path, loaded, clock)
    rounds(broker, people, audit, 3)
    witness = audit.verify().newest_checkpoint
    assert witness is not None
    size = parse_checkpoint(witness).size
    # rewrite row 2 and every hash after it, delete every checkpoint, sign the forgery
    rewrite_everything(engine, 2)
    delete_checkpoints(tmp_path / "anchors", 0)
    key = load_or_create_signing_key(tmp_path / "audit.key")  # it sits in the state dir
    forged_head = build(engine, tmp_path / "again", loaded, clock)[1].head()
    assert forged_head[0] == size
    (tmp_path / "anchors" / f"{size:020d}.txt").write_text(
        sign_checkpoint(audit.origin, size, forged_head[1], key, audit.origin))
    fresh = build(engine, tmp_path, loaded, clock)[1]
    assert fresh.verify().ok  # signed by the broker's own key: alone it passes
    report = fresh.verify(witnesses=[("auditor.txt", witness)])
    assert not report.ok
    [problem] = [p for p in report.problems if p.kind == "witness"]
    assert "auditor.txt" in problem.detail


def test_a_witness_not_signed_by_the_logs_key_is_refused(engine, tmp_path, loaded, clock,
                                                        people):
    broker, audit = build(engine, tmp_path, loaded, clock)
    rounds(broker, people, audit, 1)
    size, root = audit.head()
    other = load_or_create_signing_key(tmp_path / "other.key")
    bogus = sign_checkpoint(audit.origin, size + 50, root, other, audit.origin)
    report = audit.verify(witnesses=[("bogus.txt", bogus)])
    assert not report.ok
    assert [p.kind for p in report.problems] == ["witness_invalid"]
    assert "bogus.txt" in report.problems[0].detail


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), "audit", "verify", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_cli_saves_a_witness_and_fails_a_cut_log_against_it(sqlite, tmp_path, loaded,
                                                                clock, people):
    broker, audit = build(sqlite, tmp_path, loaded, clock)
    rounds(broker, people, audit, 2)
    export = audit.export(tmp_path / "before").parent
    witness = tmp_path / "witness.txt"
    anchor = str(tmp_path / "anchors")
    saved = _cli("--export", str(export), "--anchor", anchor, "--save-witness", str(witness))
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert f"saved the checkpoint of {audit.head()[0]} entries to {witness}" in saved.stdout
    since = parse_checkpoint(witness.read_text()).size

    rounds(broker, people, audit, 1)
    cut = since - 1
    cut_rows(sqlite, cut)
    delete_checkpoints(tmp_path / "anchors", cut)
    after = audit.export(tmp_path / "after").parent
    assert _cli("--export", str(after), "--anchor", anchor).returncode == 0  # alone: unseen
    caught = _cli("--export", str(after), "--witness", str(witness))
    assert caught.returncode == 1
    assert "truncated" in caught.stdout
    assert f"the witness {witness} signs {since}" in caught.stdout
    window = _cli("--export", str(after), "--anchor", anchor, "--anchor-since", str(since))
    assert window.returncode == 1
    assert f"--anchor-since {since}: the anchor holds no checkpoint" in window.stdout


def _settings(tmp_path: Path, **values) -> Settings:
    return Settings(catalog=CATALOG, db_url=f"sqlite:///{tmp_path / 'state' / 'b.db'}",
                    dev=True, state_dir=tmp_path / "state", secret_key=SecretBox.new_key(),
                    **values)


@pytest.mark.parametrize("anchor", [None, "state/checkpoints", "state/deep/er", "link"])
def test_an_anchor_inside_the_state_directory_is_refused_at_start(tmp_path, monkeypatch,
                                                                  anchor):
    monkeypatch.setenv("TEST_TARGET_DSN", "postgresql://x@127.0.0.1:1/db")
    (tmp_path / "state").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "state")  # the same place by another name
    settings = _settings(tmp_path, anchor_dir=tmp_path / anchor if anchor else None)
    with pytest.raises(InvalidInput, match="BREAKGLASS_ANCHOR_DIR") as refused:
        bootstrap(settings)
    assert refused.value.rule == "settings.anchor_dir"
    assert "BREAKGLASS_ANCHOR_IN_STATE_DIR" in refused.value.message
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == []  # nothing written
    opted_in = _settings(tmp_path, anchor_dir=settings.anchor_dir, anchor_in_state_dir=True)
    assert anchor_placement_refusal(opted_in) is None
    assert anchor_placement_refusal(_settings(tmp_path, anchor_dir=tmp_path / "state-x")) is None


def test_serve_refuses_the_default_anchor_and_names_the_setting(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BREAKGLASS_STATE_DIR":
           str(tmp_path / "state"), "TEST_TARGET_DSN": "postgresql://x@127.0.0.1:1/db"}
    refused = subprocess.run([str(BIN), "serve", "--catalog", str(CATALOG), "--dev",
                              "--port", "1"], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode == 2
    assert "[settings.anchor_dir]" in refused.stderr
    assert "BREAKGLASS_ANCHOR_DIR" in refused.stderr
    assert not (tmp_path / "state" / "breakglass.db").exists()
    bad = subprocess.run([str(BIN), "serve", "--catalog", str(CATALOG), "--dev", "--port", "1"],
                         env={**env, "BREAKGLASS_ANCHOR_IN_STATE_DIR": "perhaps"},
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2
    assert "BREAKGLASS_ANCHOR_IN_STATE_DIR must be" in bad.stderr
