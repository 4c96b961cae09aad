"""The deployment's marker: names it makes are its own, nothing else is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from breakglass.connectors import Ownership
from breakglass.domain.errors import InvalidInput
from breakglass.service.drift import DriftMemory, Finding
from breakglass.settings import Settings
from tests.fakes import fresh_ownership

OURS = Ownership("bg_", b"k" * 32)
THEIRS = Ownership("bg_", b"t" * 32)


@given(st.text(min_size=1, max_size=300).filter(lambda s: any(c.isascii() and c.isalnum()
                                                              for c in s)))
def test_every_name_is_ours_short_and_plain(grant_id: str) -> None:
    ref = OURS.ref_for(grant_id)
    assert OURS.owns(ref)
    assert not THEIRS.owns(ref)
    assert len(ref) <= 63
    assert ref.isascii()
    assert ref == ref.lower()


def test_lookalikes_and_forgeries_are_not_owned() -> None:
    ref = OURS.ref_for("r-0123456789ab-g0")
    stem, _, tag = ref.rpartition("_")
    flipped = ("0" if tag[-1] != "0" else "1")
    for name in ("bg_jobs", "bg_r0123456789abg0", f"{stem}_{tag[:-1]}{flipped}",
                 f"{stem}_{tag.upper()}", f"{stem}_{tag}0", f"{stem}x_{tag}", f"bg__{tag}",
                 f"xx_{ref}", THEIRS.ref_for("r-0123456789ab-g0"), ""):
        assert not OURS.owns(name), name


def test_a_longer_prefix_still_fits_postgresql() -> None:
    long = Ownership("a" * 12, b"k" * 32)
    assert len(long.ref_for("x" * 100)) <= 63
    assert long.owns(long.ref_for("x" * 100))


@pytest.mark.parametrize("prefix", ["", "1bg_", "BG_", "bg-", "bg_\u00e9", "a" * 13, "bg_ "])
def test_a_bad_marker_prefix_refuses_to_start(prefix: str, tmp_path) -> None:
    env = {"BREAKGLASS_SECRET_KEY": "x", "BREAKGLASS_MARKER_PREFIX": prefix}
    if prefix == "":
        assert Settings.from_env(tmp_path / "c.yaml", env=env).marker_prefix == "bg_"
        return
    with pytest.raises(InvalidInput) as caught:
        Settings.from_env(tmp_path / "c.yaml", env=env)
    assert caught.value.rule == "settings.marker_prefix"
    with pytest.raises(ValueError, match="marker prefix"):
        Ownership(prefix, b"k" * 32)


def test_the_prefix_is_configurable(tmp_path) -> None:
    env = {"BREAKGLASS_SECRET_KEY": "x", "BREAKGLASS_MARKER_PREFIX": "acme_bg_"}
    assert Settings.from_env(tmp_path / "c.yaml", env=env).marker_prefix == "acme_bg_"


def test_two_deployments_have_two_keys() -> None:
    assert fresh_ownership().key != fresh_ownership().key


def test_a_finding_is_reported_once_then_again_only_when_it_changes() -> None:
    memory = DriftMemory()
    assert memory.news("db", {"bg_jobs": Finding.LOOKALIKE}) == {"bg_jobs": Finding.LOOKALIKE}
    assert memory.news("db", {"bg_jobs": Finding.LOOKALIKE}) == {}
    assert memory.news("db", {}) == {}
    assert memory.news("db", {"bg_jobs": Finding.LOOKALIKE}) == {"bg_jobs": Finding.LOOKALIKE}
    assert memory.news("cache", {"bg_jobs": Finding.LOOKALIKE}) == {"bg_jobs": Finding.LOOKALIKE}
