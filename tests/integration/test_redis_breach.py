"""A Redis grantee trying to administer the server, against a real Redis 7.

Each attack grant is tried twice: through ``lint`` (catalog load), which must
refuse it, and then with lint switched off, as if a bad catalog had slipped
through: the broker must then either refuse the grant because the server says
the user could do too much (nothing left on the target), or hand out a
credential with which the attacker still cannot touch ACLs, config, modules,
DEBUG, SHUTDOWN, replication, FLUSHALL or keys outside the grant, nor leave a
user behind. Destructive commands (FLUSHALL, SHUTDOWN, REPLICAOF...) are never
run for real on the shared server: the server's own ``ACL DRYRUN`` verdict is
asked for them; everything else the attacker really runs.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from breakglass.catalog.loader import parse_catalog
from breakglass.connectors import redis_acl
from breakglass.connectors.base import GrantSpec, IssuedCredential
from breakglass.connectors.redis import RedisConnector
from breakglass.connectors.redis_commands import COMMAND_TABLE
from breakglass.domain.errors import CatalogError, TargetError
from tests.fakes import fresh_ownership
from tests.services import require

OWNERSHIP = fresh_ownership()  # this module's deployment

pytestmark = pytest.mark.integration

APP = "bgbreach:app:*"
# fmt: off
ATTACKS: list[tuple[str, dict[str, Any]]] = [
    *((zone, {"keys": [APP], "commands": rules}) for zone in "AB" for rules in [
        ["+@slow"], ["+@connection"], ["+@scripting"], ["+eval"], ["+evalsha"], ["+fcall"],
        ["+function|load"], ["+@all"], ["+@all", "-@dangerous"], ["+@all", "-@admin"],
        ["+@dangerous"], ["+@admin"], ["+@keyspace"], ["+@fast"], ["+@hyperloglog"],
        ["+config|get"], ["+config"], ["+acl|setuser"], ["+acl"], ["+acl|whoami"],
        ["+client|kill"], ["+client"], ["+flushall"], ["+FLUSHALL"], ["+flushall|async"],
        ["+flushdb"], ["+swapdb"], ["+module|list"], ["+debug"], ["+shutdown"],
        ["+replicaof"], ["+slaveof"], ["+failover"], ["+migrate"], ["+sync"], ["+psync"],
        ["+cluster"], ["+cluster|meet"], ["+monitor"], ["+info"], ["+restore"],
        ["+@read", "+@write", "-flushall", "-flushdb"], ["-@all", "+@all"],
    ]),
    *(("A", {"keys": [APP], "commands": rules}) for rules in [
        ["+@write"], ["+set"], ["+@string"], ["+publish"], ["+@pubsub"], ["+del"],
    ]),
    *((zone, {"keys": [APP, pattern], "commands": ["+get", "+set"] if zone == "B" else ["+get"]})
      for zone in "AB"
      for pattern in ["*", "**", "?*", "*?*", "[a-z]*", "[^x]*", "*zz*", "*:*", "?"]),
    ("B", {"keys": [APP], "commands": ["+subscribe", "+publish"], "channels": ["*"]}),
    ("B", {"keys": [APP], "commands": ["+@write"]}),
]
ZONE_C = [["+@all"], ["+@admin"], ["+@dangerous"], ["+@slow"], ["+@scripting", "+@read"],
          ["+@connection", "+@read"], ["+@all", "-@dangerous"]]
# fmt: on
NEVER = ["+config|get", "+acl|setuser", "+acl|whoami", "+module", "+debug", "+shutdown",
         "+cluster|meet", "+replicaof"]


def lint_errors(zone: str, grant: dict[str, Any]) -> list[str]:
    """What catalog load (``lint`` and ``serve``) says about one role with this grant."""
    text = yaml.safe_dump({
        "version": 1, "organization": "test-org", "identity": {"audience": "breakglass"},
        "incident": {"id_pattern": "^SEV-[0-9]{4,}$"}, "reason_codes": ["recovery"],
        "zones": {
            "A": {"default_ttl": "20m", "max_ttl": "45m", "approvals": 0, "self_approval": True},
            "B": {"default_ttl": "20m", "max_ttl": "40m", "approvals": 1},
            "C": {"default_ttl": "10m", "max_ttl": "12m", "approvals": 2},
        },
        "approvers": {"B": ["group:reviewers"], "C": ["group:reviewers"]},
        "targets": {"cache": {"type": "redis", "url": "redis://default:pw@127.0.0.1:6379/0"}},
        "roles": {"attack": {"zone": zone, "target": "cache", "requesters": ["group:oncall"],
                             "grant": grant}},
    })
    try:
        parse_catalog(text, "catalog.yaml", env={})
    except CatalogError as exc:
        return [str(e) for e in exc.errors]
    return []


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(require("BG_TEST_REDIS_URL"), protocol=2, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def connector() -> Iterator[RedisConnector]:
    conn = RedisConnector("cache-breach", {"url": require("BG_TEST_REDIS_URL")},
                          ownership=OWNERSHIP)
    yield conn
    conn.close()


def spec_for(grant: dict[str, Any], zone: str) -> GrantSpec:
    return GrantSpec(grant_id=uuid.uuid4().hex, request_id="req-breach", principal="mallory",
                     role="attack", incident="SEV-0001", grant=grant, zone=zone,
                     expires_at=datetime.now(UTC) + timedelta(minutes=5))


def as_user(secret: Any) -> redis.Redis:
    return redis.Redis(host=secret["host"], port=secret["port"], username=secret["username"],
                       password=secret["password"], protocol=2, decode_responses=True,
                       single_connection_client=True, retry=Retry(NoBackoff(), 0))


def attack(admin: redis.Redis, issued: IssuedCredential, zone: str) -> None:
    """Everything a grantee tried in the red-team pass; each must fail."""
    backdoor = f"backdoor-{uuid.uuid4().hex[:8]}"
    me = issued.secret["username"]
    outside = f"zz-outside:{uuid.uuid4().hex}"
    admin.set(outside, "secret", ex=60)
    user = as_user(issued.secret)
    denied: list[tuple[Any, ...]] = [
        ("ACL", "SETUSER", backdoor, "on", ">pw", "+@all", "~*"),
        ("ACL", "SETUSER", me, "+@all", "~*", "&*"),
        ("ACL", "LIST"), ("ACL", "GETUSER", "default"), ("ACL", "WHOAMI"),
        ("CONFIG", "GET", "requirepass"), ("CONFIG", "SET", "slowlog-max-len", "128"),
        ("CONFIG", "REWRITE"), ("MODULE", "LIST"), ("SHUTDOWN", "ABORT"),
        ("CLUSTER", "MEET", "127.0.0.1", "1"),  # DEBUG is off on this server: asked below
    ]
    if zone != "C":
        denied += [("GET", outside), ("PUBLISH", "zz-outside", "x"), ("CLIENT", "LIST"),
                   ("EVAL", "return 1", "0"), ("FUNCTION", "LIST")]
    if zone == "A":
        denied += [("SET", "bgbreach:app:x", "v"), ("DEL", "bgbreach:app:x")]
    try:
        for command in denied:
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*command)
        if zone == "C":  # scripts run as the caller: ACL stays out of reach
            with pytest.raises(redis.exceptions.ResponseError):
                user.eval("return redis.call('ACL','SETUSER',ARGV[1],'on','>pw','+@all')",
                          0, backdoor)
    finally:
        user.close()
        admin.delete(outside)
    destructive = [("SHUTDOWN",), ("REPLICAOF", "127.0.0.1", "1"), ("SLAVEOF", "no", "one"),
                   ("FAILOVER",), ("DEBUG", "SEGFAULT"), ("MODULE", "LOAD", "/tmp/x.so"),
                   ("MIGRATE", "127.0.0.1", "1", "k", "0", "1"), ("SYNC",), ("CONFIG", "SET",
                   "dir", "/tmp"), ("ACL", "LOAD"), ("ACL", "DELUSER", "default")]
    if zone != "C":
        destructive += [("FLUSHALL",), ("FLUSHDB",), ("SWAPDB", "0", "1")]
    for command in destructive:
        assert "no permissions to run" in str(admin.acl_dryrun(me, *command)), command
    assert admin.acl_getuser(backdoor) is None


@pytest.mark.parametrize(("zone", "grant"), ATTACKS)
def test_lint_refuses_a_grant_past_its_zone(zone: str, grant: dict[str, Any]) -> None:
    found = lint_errors(zone, grant)
    assert found
    assert all(e.startswith("roles.attack.grant:") for e in found), found


@pytest.mark.parametrize(("zone", "grant"), ATTACKS)
def test_past_lint_the_server_refuses_or_the_grantee_stays_harmless(
    admin: redis.Redis, connector: RedisConnector, monkeypatch: pytest.MonkeyPatch,
    zone: str, grant: dict[str, Any],
) -> None:
    monkeypatch.setattr(RedisConnector, "validate_grant", classmethod(lambda cls, g: []))
    monkeypatch.setattr(RedisConnector, "validate_for_zone", classmethod(lambda cls, g, z: []))
    spec = spec_for(grant, zone)
    planned = connector.planned_ref(spec.grant_id)
    assert planned
    refusal = ""
    try:
        issued = connector.grant(spec)
    except TargetError as exc:
        refusal = str(exc)
    if refusal:
        assert "refused: the server says" in refusal
        assert admin.acl_getuser(planned) is None
        return
    try:
        attack(admin, issued, zone)
    finally:
        connector.revoke(issued.target_ref)
    assert admin.acl_getuser(issued.target_ref) is None


@pytest.mark.parametrize("rules", ZONE_C)
def test_a_broad_zone_c_grant_still_cannot_administer_or_leave_a_user(
    admin: redis.Redis, connector: RedisConnector, rules: list[str]
) -> None:
    grant = {"keys": ["*"], "commands": rules, "allow_dangerous": True}
    assert lint_errors("C", grant) == []
    assert lint_errors("B", grant)
    issued = connector.grant(spec_for(grant, "C"))
    try:
        attack(admin, issued, "C")
    finally:
        connector.revoke(issued.target_ref)
    assert admin.acl_getuser(issued.target_ref) is None


@pytest.mark.parametrize("zone", "ABC")
@pytest.mark.parametrize("rule", NEVER)
def test_no_zone_may_name_a_never_granted_command(zone: str, rule: str) -> None:
    grant = {"keys": ["bgbreach:*"], "commands": ["+get", rule], "allow_dangerous": zone == "C"}
    assert any("not even with allow_dangerous" in e for e in lint_errors(zone, grant))


def _disabled_user(admin: redis.Redis, *rules: str) -> str:
    name = f"bgbreach-{uuid.uuid4().hex[:12]}"
    admin.acl_setuser(name, reset=True, enabled=False, nopass=False, commands=[
        r for r in rules if r[0] in "+-"], keys=[r for r in rules if r[0] in "~%"],
        channels=[r[1:] for r in rules if r[0] == "&"])
    return name


def test_dryrun_answers_for_a_user_that_is_still_off(admin: redis.Redis) -> None:
    user = _disabled_user(admin, "+get", "~bgbreach:app:*")
    try:
        assert "off" in admin.acl_getuser(user)["flags"]
        assert admin.acl_dryrun(user, "get", "bgbreach:app:1") == "OK"
        assert "to run the 'set' command" in admin.acl_dryrun(user, "set", "bgbreach:app:1", "v")
        assert "'zz' key" in admin.acl_dryrun(user, "get", "zz")
    finally:
        admin.acl_deluser(user)


def test_the_server_oracle_sees_all_an_unscoped_user_could_do(
    admin: redis.Redis, connector: RedisConnector
) -> None:
    user = _disabled_user(admin, "+@all", "~*", "&*")
    try:
        with connector._admin() as client:
            for zone in "AB":
                found = connector._excess(client, user, zone)
                assert {"acl|setuser", "config|get", "flushall", "module|load", "shutdown",
                        "debug", "eval", "client|kill", "replicaof"} <= set(found)
                assert "outside its patterns" in found["get"]
            assert "outside its patterns" in found["publish"]  # zone B: publishing is allowed
            found = connector._excess(client, user, "C")
            assert {"acl|setuser", "config|set", "module|load", "shutdown"} <= set(found)
            assert "flushall" not in found
            assert "get" not in found
    finally:
        admin.acl_deluser(user)


def test_the_server_oracle_passes_what_lint_passes(
    admin: redis.Redis, connector: RedisConnector
) -> None:
    rules = ["+@read", "+@string", "+@hash", "+@pubsub", "+@transaction", "+ping"]
    assert lint_errors("B", {"keys": [APP], "commands": rules, "channels": ["bgbreach:*"]}) == []
    user = _disabled_user(admin, *rules, *redis_acl.hard_rules("B"), f"~{APP}", "&bgbreach:*")
    try:
        with connector._admin() as client:
            assert connector._excess(client, user, "B") == {}
            assert set(connector._excess(client, user, "A")) == {
                n for n in COMMAND_TABLE if {"string", "hash"} & COMMAND_TABLE[n]
                and "write" in COMMAND_TABLE[n]} | {"publish", "spublish"}
    finally:
        admin.acl_deluser(user)


def test_the_offline_command_table_is_the_servers(admin: redis.Redis) -> None:
    live = {p.name: p.categories for p in redis_acl.probes(admin.command())}
    assert live == dict(COMMAND_TABLE)


def test_a_refused_grant_leaves_nothing_on_the_target(
    admin: redis.Redis, connector: RedisConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RedisConnector, "validate_for_zone", classmethod(lambda cls, g, z: []))
    monkeypatch.setattr(redis_acl, "hard_rules", lambda zone: [])
    spec = spec_for({"keys": [APP], "commands": ["+@admin"], "allow_dangerous": True}, "B")
    with pytest.raises(TargetError, match=r"could run acl\|") as info:
        connector.grant(spec)
    assert "beyond zone B" in str(info.value)
    assert admin.acl_getuser(connector.planned_ref(spec.grant_id) or "") is None


def test_the_stored_password_is_the_hash_of_the_one_handed_out(
    admin: redis.Redis, connector: RedisConnector
) -> None:
    issued = connector.grant(spec_for({"keys": [APP], "commands": ["+get"]}, "A"))
    try:
        digest = hashlib.sha256(issued.secret["password"].encode()).hexdigest()
        assert admin.acl_getuser(issued.target_ref)["passwords"] == [digest]
        assert "%R~bgbreach:app:*" in admin.acl_getuser(issued.target_ref)["keys"]
    finally:
        connector.revoke(issued.target_ref)
