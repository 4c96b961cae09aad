"""`breakglass audit verify` against a server: paging, and a server that does not page on."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from breakglass.audit import (
    TreeState,
    event_leaf_hash,
    public_key_text,
    seal_event,
    sign_checkpoint,
)
from breakglass.cli.audit import verify_online

NAME = "breakglass.example/audit"
KEY = Ed25519PrivateKey.generate()


def sealed_log(n: int) -> list[dict[str, Any]]:
    rows, prev = [], None
    for i in range(n):
        row = seal_event({"index": i, "action": "grant:activated", "actor": f"u{i % 3}",
                          "payload": {"i": i}}, prev)
        prev = bytes.fromhex(row["leaf_hash"])
        rows.append(row)
    return rows


class Server:
    """Answers the audit calls the way the broker's API does, in pages of ``page``."""

    def __init__(self, rows: list[dict[str, Any]], page: int, stuck: bool = False) -> None:
        self.rows, self.page, self.stuck = rows, page, stuck
        self.starts: list[int] = []
        state = TreeState()
        for row in rows:
            state.append(event_leaf_hash(row))
        self.checkpoint = sign_checkpoint(NAME, state.size, state.root(), KEY, NAME)

    def call(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        if path == "/v1/audit/checkpoints":
            return [self.checkpoint]
        assert path == "/v1/audit/entries"
        start = 0 if self.stuck else params["start"]
        self.starts.append(params["start"])
        return self.rows[start:start + self.page]

    def raw(self, method: str, path: str) -> bytes:
        return public_key_text(KEY.public_key(), NAME).encode()


def test_every_page_is_fetched_in_order_and_the_log_verifies() -> None:
    server = Server(sealed_log(40), page=7)
    report = verify_online(server, None)  # type: ignore[arg-type]
    assert report.ok, report.problems
    assert report.size == 40
    assert report.anchored_size == 40
    assert server.starts == [0, 7, 14, 21, 28, 35, 40]


def test_a_server_that_repeats_its_first_page_ends_the_walk_with_a_problem() -> None:
    server = Server(sealed_log(40), page=7, stuck=True)
    report = verify_online(server, None)  # type: ignore[arg-type]
    assert not report.ok
    problem = report.problems[0]
    assert (problem.index, problem.kind) == (0, "out_of_order")  # index 0 again after 6
    assert len(server.starts) <= 3
