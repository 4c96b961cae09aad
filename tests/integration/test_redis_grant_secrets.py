"""The password of a Redis grant reaches nobody but the requester, against a real Redis 7.

It crosses the wire only as its SHA-256 (``#<hex>``), so neither a capture of
the broker's traffic, nor ``MONITOR``, nor the slow log of the target (logging
every command) can show it, and the credential still logs in.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import redis

from breakglass.connectors.base import GrantSpec
from breakglass.connectors.redis import RedisConnector
from tests.fakes import fresh_ownership
from tests.services import require

OWNERSHIP = fresh_ownership()  # this module's deployment

pytestmark = pytest.mark.integration

GRANT = {"keys": ["bgsecret:*"], "commands": ["+get", "+ping"]}


class Relay:
    """A TCP relay in front of Redis that keeps every byte the client sends."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                sock.close()

    def close(self) -> None:
        self._server.close()


def spec() -> GrantSpec:
    return GrantSpec(grant_id=uuid.uuid4().hex, request_id="req-secret", principal="alice",
                     role="cache-read", incident="SEV-0001", grant=GRANT, zone="A",
                     expires_at=datetime.now(UTC) + timedelta(minutes=5))


def spellings(password: str) -> list[str]:
    return [password, quote(password, safe="")]


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(require("BG_TEST_REDIS_URL"), protocol=2, decode_responses=True)
    yield client
    client.close()


def logs_in(secret: Any, key: str = "bgsecret:probe") -> bool:
    with redis.Redis(host=secret["host"], port=secret["port"], username=secret["username"],
                     password=secret["password"], protocol=2) as user:
        return bool(user.ping()) and user.get(key) is None


def test_the_password_never_crosses_the_wire() -> None:
    url = urlsplit(require("BG_TEST_REDIS_URL"))
    relay = Relay(url.hostname or "127.0.0.1", url.port or 6379)
    via_relay = url._replace(netloc=f"{url.username or 'default'}:{url.password}"
                                    f"@127.0.0.1:{relay.port}").geturl()
    connector = RedisConnector("cache-relay", {"url": via_relay,
                                               "client_url": require("BG_TEST_REDIS_URL")},
                               ownership=OWNERSHIP)
    try:
        issued = connector.grant(spec())
        try:
            password = issued.secret["password"]
            digest = hashlib.sha256(password.encode()).hexdigest()
            for spelled in spellings(password):
                assert spelled.encode() not in relay.sent
            assert digest.encode() in relay.sent  # the capture did see the grant
            assert issued.target_ref.encode() in relay.sent
            assert logs_in(issued.secret)
        finally:
            connector.revoke(issued.target_ref)
    finally:
        connector.close()
        relay.close()


def test_monitor_and_slowlog_never_show_the_password(admin: redis.Redis) -> None:
    lines: list[str] = []
    stop = threading.Event()
    watching = threading.Event()
    watcher = redis.Redis.from_url(require("BG_TEST_REDIS_URL"), protocol=2,
                                   decode_responses=True, socket_timeout=0.5)

    def watch() -> None:
        with watcher.monitor() as monitor:
            watching.set()
            while not stop.is_set():
                try:
                    lines.append(str(monitor.next_command()))
                except (redis.TimeoutError, TimeoutError):
                    continue

    thread = threading.Thread(target=watch, daemon=True)
    marker = f"bgsecret:{uuid.uuid4().hex}"
    before = admin.config_get("slowlog-*")
    admin.config_set("slowlog-max-len", 4096)
    admin.config_set("slowlog-log-slower-than", 0)
    connector = RedisConnector("cache-logs", {"url": require("BG_TEST_REDIS_URL")},
                               ownership=OWNERSHIP)
    try:
        thread.start()
        assert watching.wait(5)
        issued = connector.grant(spec())
        assert logs_in(issued.secret, marker)
        connector.revoke(issued.target_ref)
        slowlog = str(admin.slowlog_get(4096))
    finally:
        admin.config_set("slowlog-log-slower-than", before["slowlog-log-slower-than"])
        admin.config_set("slowlog-max-len", before["slowlog-max-len"])
        stop.set()
        thread.join(5)
        watcher.close()
        connector.close()
    watched = "\n".join(lines)
    assert issued.target_ref in slowlog  # the slow log did record the grant's commands
    assert marker in slowlog  # ... and the grantee's,
    assert marker in watched  # as MONITOR did (it never shows ACL commands)
    for spelled in spellings(issued.secret["password"]):
        assert spelled not in slowlog
        assert spelled not in watched
