"""The request state machine and durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from breakglass.domain.durations import format_duration, parse_duration
from breakglass.domain.errors import Conflict, InvalidInput
from breakglass.domain.model import AccessRequest, PrincipalKind, RequestState, Zone
from tests.fakes import FakeClock


def new_request(clock: FakeClock) -> AccessRequest:
    return AccessRequest(
        id="r-1", requester="uma", requester_kind=PrincipalKind.HUMAN,
        requester_teams=frozenset({"ml-serving"}), roles=("embeddings-read",), zone=Zone.A,
        environment="production", incident="SEV-1234", reason="recovery", justification="",
        ttl=timedelta(minutes=5), created_at=clock.now(),
        pending_until=clock.now() + timedelta(hours=1),
    )


@pytest.mark.parametrize("path", [
    [RequestState.ACTIVATING, RequestState.ACTIVE, RequestState.REVOKING, RequestState.EXPIRED],
    [RequestState.ACTIVATING, RequestState.ACTIVE, RequestState.REVOKING, RequestState.REVOKED],
    [RequestState.ACTIVATING, RequestState.FAILED],
    [RequestState.DENIED],
    [RequestState.CANCELLED],
    [RequestState.EXPIRED],
])
def test_allowed_paths(path):
    req = new_request(FakeClock())
    for state in path:
        req.transition(state)
    assert req.state is path[-1]


@pytest.mark.parametrize(("path", "bad"), [
    ([], RequestState.ACTIVE),                        # never active without activation
    ([RequestState.DENIED], RequestState.ACTIVATING),  # a denied request stays denied
    ([RequestState.ACTIVATING, RequestState.ACTIVE], RequestState.PENDING),
    ([RequestState.ACTIVATING, RequestState.ACTIVE, RequestState.REVOKING,
      RequestState.EXPIRED], RequestState.ACTIVE),
    ([RequestState.CANCELLED], RequestState.EXPIRED),
])
def test_forbidden_transitions_raise_conflict(path, bad):
    req = new_request(FakeClock())
    for state in path:
        req.transition(state)
    with pytest.raises(Conflict, match="cannot become"):
        req.transition(bad)
    assert req.state is (path[-1] if path else RequestState.PENDING)


def test_ending_remembers_whether_it_expired_or_was_revoked():
    clock = FakeClock()
    req = new_request(clock)
    req.transition(RequestState.ACTIVATING)
    req.transition(RequestState.ACTIVE)
    req.begin_ending(RequestState.REVOKED, "revoked by vera", clock.now())
    assert req.state is RequestState.REVOKING
    req.finish_ending()
    assert req.state is RequestState.REVOKED
    assert req.state.is_final


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("45", 45), (" 2M ", 120),
])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "abc", "-5m", "0s", "15 m", "1.5h", "9999d", "m15"])
def test_bad_durations_are_refused(text):
    with pytest.raises(InvalidInput):
        parse_duration(text)


def test_duration_formatting_round_trips():
    for text in ("90s", "15m", "1h", "2h"):
        assert format_duration(parse_duration(text)) == text
