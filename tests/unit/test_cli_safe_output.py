"""What a requester types is shown as text: no terminal sequences, no markup, no forged lines."""

from __future__ import annotations

import io
from typing import Any

import pytest

from breakglass.cli import render

pytestmark = pytest.mark.unit

INJECTIONS = [
    "\x1b[2J\x1b[31mroot shell granted\x1b[0m",  # clear screen, colours
    "ok\r\n    99 2026-01-01T00:00:00Z broker     request:approved",  # a forged timeline line
    "\u202egnp.exe",  # right-to-left override
    "[bold red]APPROVED[/]",  # Rich markup
    "[/bold]",  # a closing tag that crashed `show`
    ":warning: \x07\x08\x0b\x0c\x7f\u2028\u2029\u200b",
]


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    console = render.DataConsole(file=buffer, width=400, highlight=False, soft_wrap=True,
                                 markup=False, emoji=False, color_system=None)
    monkeypatch.setattr(render, "out", console)
    return buffer


def _request(text: str) -> dict[str, Any]:
    return {"id": "r-1", "state": "active", "zone": "B", "roles": [text], "incident": text,
            "reason": text, "requester": text, "approvals": [{"approver": text}],
            "approvals_required": 1, "workload": text, "expires_at": None,
            "grants": [{"id": "g", "target": text, "target_ref": text, "state": "active"}],
            "end_reason": text}


def _assert_inert(shown: str, lines: int) -> None:
    assert "\x1b" not in shown
    assert "\r" not in shown
    for ch in "\u202e\u2028\u2029\u200b\x07\x08\x0b\x0c\x7f":
        assert ch not in shown
    assert shown.count("\n") == lines


@pytest.mark.parametrize("text", INJECTIONS)
def test_show_prints_every_field_as_inert_text(screen: io.StringIO, text: str) -> None:
    render.request_summary(_request(text))
    shown = screen.getvalue()
    _assert_inert(shown, lines=6)
    assert render.visible(text) in shown
    if text.startswith("["):
        assert text in shown  # the markup is shown, not interpreted


@pytest.mark.parametrize("text", INJECTIONS)
def test_timeline_is_one_line_per_event(screen: io.StringIO, text: str) -> None:
    events = [{"index": i, "ts": "2026-12-02T02:00:00.000000+00:00", "actor": text,
               "action": "request:revoked", "outcome": "ok", "request_id": text,
               "grant_id": None, "reason": text, "rule": text} for i in range(3)]
    render.timeline_lines(events)
    _assert_inert(screen.getvalue(), lines=3)


@pytest.mark.parametrize("text", INJECTIONS)
def test_list_table_cells_are_inert(screen: io.StringIO, text: str) -> None:
    render.request_table([_request(text)])
    shown = screen.getvalue()
    _assert_inert(shown, lines=shown.count("\n"))
    assert "\x1b" not in shown


def test_visible_keeps_ordinary_text() -> None:
    ordinary = "Zo\u00eb's caf\u00e9 \u6771\u4eac ok"
    assert render.visible(ordinary) == ordinary
    assert render.visible("a\x1bb\nc") == "a\\x1bb\\nc"
