"""The Redis connector against a real Redis 7 (``BG_TEST_REDIS_URL``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from breakglass.connectors.base import GrantSpec, IssuedCredential
from breakglass.connectors.redis import RedisConnector, user_name_for
from breakglass.domain.errors import TargetError
from tests.fakes import fresh_ownership
from tests.services import require

OWNERSHIP = fresh_ownership()  # this module's deployment

pytestmark = pytest.mark.integration

READ_APP_KEYS = {"keys": ["bgtest:app:*"], "commands": ["+@read", "+ping"]}


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(require("BG_TEST_REDIS_URL"), protocol=2, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def connector() -> Iterator[RedisConnector]:
    conn = RedisConnector("cache-test", {"url": require("BG_TEST_REDIS_URL")},
                          ownership=OWNERSHIP)
    yield conn
    conn.close()


@pytest.fixture
def mint(connector: RedisConnector) -> Iterator[Any]:
    """Mint grants through the connector; revoke whatever is left at the end."""
    minted: list[str] = []

    def _mint(grant: dict[str, Any], zone: str = "A") -> IssuedCredential:
        spec = GrantSpec(
            grant_id=uuid.uuid4().hex,
            request_id="req-1",
            principal="alice",
            role="cache-read",
            incident="INC-123",
            grant=grant,
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
            zone=zone,
        )
        issued = connector.grant(spec)
        minted.append(issued.target_ref)
        return issued

    yield _mint
    for ref in minted:
        connector.revoke(ref)


def as_user(secret: Any) -> redis.Redis:
    """One connection authenticated with the minted credential, never retried."""
    return redis.Redis(
        host=secret["host"],
        port=secret["port"],
        username=secret["username"],
        password=secret["password"],
        protocol=2,
        decode_responses=True,
        single_connection_client=True,
        retry=Retry(NoBackoff(), 0),
    )


def test_credential_works_within_scope_and_nowhere_else(admin: redis.Redis, mint: Any) -> None:
    admin.set("bgtest:app:model", "v1")
    admin.set("bgtest:other:model", "secret")
    issued = mint(READ_APP_KEYS)
    user = as_user(issued.secret)
    try:
        assert user.ping()
        assert user.get("bgtest:app:model") == "v1"
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.get("bgtest:other:model")
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.set("bgtest:app:model", "v2")
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.publish("bgtest:alerts", "hello")
    finally:
        user.close()
    assert admin.get("bgtest:app:model") == "v1"


def test_secret_url_logs_in_and_carries_expiry(mint: Any) -> None:
    issued = mint(READ_APP_KEYS)
    assert issued.target_ref == issued.secret["username"]
    assert issued.target_ref.startswith("bg_")
    assert issued.secret["type"] == "redis"
    assert datetime.fromisoformat(issued.secret["expires_at"]) > datetime.now(UTC)
    client = redis.Redis.from_url(issued.secret["url"], protocol=2)
    try:
        assert client.ping()
    finally:
        client.close()


def test_listed_channels_only(mint: Any) -> None:
    grant = {**READ_APP_KEYS, "commands": ["+ping", "+publish"], "channels": ["bgtest:ch:*"]}
    issued = mint(grant, zone="B")  # publishing is a write: not in zone A
    user = as_user(issued.secret)
    try:
        assert user.publish("bgtest:ch:1", "x") == 0
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.publish("bgtest:elsewhere", "x")
    finally:
        user.close()


def test_revoke_kills_open_connection_and_refuses_login(
    admin: redis.Redis, connector: RedisConnector, mint: Any
) -> None:
    issued = mint(READ_APP_KEYS)
    user = as_user(issued.secret)
    assert user.ping()
    assert connector.verify(issued.target_ref)
    connector.revoke(issued.target_ref)

    assert not any(c.get("user") == issued.target_ref for c in admin.client_list())
    with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError)):
        user.ping()
    user.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        as_user(issued.secret).ping()
    assert not connector.verify(issued.target_ref)
    assert admin.acl_getuser(issued.target_ref) is None


def test_revoke_is_idempotent(connector: RedisConnector, mint: Any) -> None:
    issued = mint(READ_APP_KEYS)
    connector.revoke(issued.target_ref)
    connector.revoke(issued.target_ref)
    connector.revoke(user_name_for(OWNERSHIP, "never-granted"))


def test_revoke_refuses_users_without_the_marker(
    admin: redis.Redis, connector: RedisConnector
) -> None:
    with pytest.raises(TargetError, match="not a broker-managed user"):
        connector.revoke("default")
    assert admin.acl_getuser("default") is not None


def test_list_managed_sees_minted_users(connector: RedisConnector, mint: Any) -> None:
    issued = mint(READ_APP_KEYS)
    assert issued.target_ref in connector.list_managed()
    connector.revoke(issued.target_ref)
    assert issued.target_ref not in connector.list_managed()


def test_inventory_finds_planted_admin_user(admin: redis.Redis, connector: RedisConnector) -> None:
    planted, disabled = f"ops-admin-{uuid.uuid4().hex[:8]}", f"ops-old-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    admin.acl_setuser(
        planted, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"]
    )
    admin.acl_setuser(disabled, enabled=False, passwords=["+x"], keys=["*"], commands=["+@all"])
    try:
        found = {p.subject: p for p in connector.inventory()}
        assert found[planted].privilege == "+@all"
        assert found[planted].target == "cache-test"
        assert password not in found[planted].detail
        assert disabled not in found
    finally:
        admin.acl_deluser(planted, disabled)


@pytest.mark.parametrize(
    "grant",
    [
        {"keys": ["app:* +@all"], "commands": ["+get"]},
        {"keys": ["app:*\n+@all"], "commands": ["+get"]},
        {"keys": ["~*"], "commands": ["+get"]},
        {"keys": ["app:*"], "commands": ["+get ~*"]},
        {"keys": ["app:*"], "commands": ["+get\x00"]},
        {"keys": ["app:*"], "commands": ["get"]},
        {"keys": ["app:*"], "commands": ["allcommands"]},
        {"keys": ["app:*"], "commands": ["-get"]},
        {"keys": ["app:*"], "commands": ["+get"], "channels": ["ch 1"]},
        {"keys": [], "commands": ["+get"]},
        {"keys": ["app:*"], "commands": []},
        {"keys": ["app:*"], "commands": ["+get"], "selectors": ["(+set ~*)"]},
        {"keys": ["app:*"], "commands": ["+@dangerous"]},
        {"keys": ["app:*"], "commands": ["+@all"]},
        {"keys": ["app:*"], "commands": ["+@admin"]},
        {"keys": ["app:*"], "commands": ["+config|set"]},
        {"keys": ["*"], "commands": ["+@read"]},
        {"keys": ["app:*"], "commands": ["+@all"], "allow_dangerous": "yes"},
    ],
)
def test_validate_grant_refuses(grant: dict[str, Any]) -> None:
    assert RedisConnector.validate_grant(grant)


def test_dangerous_grants_need_allow_dangerous() -> None:
    grant: dict[str, Any] = {"keys": ["app:*"], "commands": ["+@dangerous"]}
    assert RedisConnector.dangerous(grant)
    assert RedisConnector.validate_grant({**grant, "allow_dangerous": True}) == []
    assert not RedisConnector.dangerous(READ_APP_KEYS)
    assert RedisConnector.validate_grant(READ_APP_KEYS) == []
    ok = {"keys": ["app:*"], "commands": ["+@read", "-keys", "+set"], "channels": ["a:*"]}
    assert RedisConnector.validate_grant(ok) == []


def test_grant_refuses_invalid_block_before_touching_redis(
    admin: redis.Redis, connector: RedisConnector
) -> None:
    before = admin.acl_users()
    spec = GrantSpec(
        grant_id=uuid.uuid4().hex,
        request_id="req-1",
        principal="alice",
        role="cache-admin",
        incident="INC-123",
        grant={"keys": ["app:*"], "commands": ["+@all"]},
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    with pytest.raises(TargetError, match="allow_dangerous"):
        connector.grant(spec)
    assert admin.acl_users() == before


def test_validate_config() -> None:
    assert RedisConnector.validate_config({})
    assert RedisConnector.validate_config({"url": "http://x"})
    assert RedisConnector.validate_config({"url": "redis://h:6379/0"}) == []


def test_client_url_overrides_what_credentials_show() -> None:
    conn = RedisConnector(
        "cache-test",
        {"url": require("BG_TEST_REDIS_URL"), "client_url": "rediss://cache.example:6380/2"},
        ownership=OWNERSHIP,
    )
    spec = GrantSpec(
        grant_id=uuid.uuid4().hex,
        request_id="req-1",
        principal="alice",
        role="cache-read",
        incident="INC-123",
        grant=READ_APP_KEYS,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    issued = conn.grant(spec)
    try:
        assert issued.secret["host"] == "cache.example"
        assert issued.secret["port"] == 6380
        assert issued.secret["url"].startswith(f"rediss://{issued.target_ref}:")
        assert issued.secret["url"].endswith("@cache.example:6380/2")
    finally:
        conn.revoke(issued.target_ref)
        conn.close()


def test_target_errors_carry_no_secret() -> None:
    url = urlsplit(require("BG_TEST_REDIS_URL"))
    netloc = f"{url.username or 'default'}:wrong-admin-password@{url.hostname}:{url.port}"
    wrong = url._replace(netloc=netloc).geturl()
    conn = RedisConnector("cache-test", {"url": wrong}, ownership=OWNERSHIP)
    with pytest.raises(TargetError) as info:
        conn.list_managed()
    assert "wrong-admin-password" not in str(info.value)
    assert isinstance(info.value.__cause__, redis.RedisError)
    conn.close()

    down = RedisConnector("cache-down", {"url": "redis://default:pw-nobody-knows@127.0.0.1:1/0"},
                          ownership=OWNERSHIP)
    with pytest.raises(TargetError) as info:
        down.verify(user_name_for(OWNERSHIP, "x"))
    assert "pw-nobody-knows" not in str(info.value)
    down.close()
