"""The allowlist model of Redis grants, offline: what ``lint`` and ``serve`` accept per zone.

Each row is one grant block and the zone of its role; ``None`` means the
catalog loads, otherwise the text one of its errors must contain. Every check
goes through the two hooks catalog load calls, ``validate_grant`` then
``validate_for_zone``.
"""

from __future__ import annotations

from typing import Any

import pytest

from breakglass.connectors import redis_acl
from breakglass.connectors.redis import RedisConnector
from breakglass.connectors.redis_commands import COMMAND_TABLE

pytestmark = pytest.mark.unit

NEVER = "not even with allow_dangerous"
PAST_B = "allow_dangerous: true"
READ_ONLY = "zone A is read-only"
NO_ADMIN = "zone B may read and write data"
PREFIX = "literal prefix"


def g(*commands: str, keys: tuple[str, ...] = ("app:*",), **more: Any) -> dict[str, Any]:
    return {"keys": list(keys), "commands": list(commands), **more}


# fmt: off
TABLE: list[tuple[str, dict[str, Any], str | None]] = [
    # what each zone is for
    ("A", g("+@read"), None),
    ("A", g("+@read", "+ping", "-keys"), None),
    ("A", g("+get", "+mget", "+hgetall", "+scan", "+ttl", "+type"), None),
    ("A", g("+subscribe", "+psubscribe", keys=("app:*",), channels=["alerts:*"]), None),
    ("A", g("+@read", "+@transaction", "+client|setname", "+command|docs", "+select|0"), None),
    ("A", g("+object", "+object|help", "+object|encoding"), None),
    ("B", g("+@read", "+@string", "+@hash", "+@list", "+@set", "+@sortedset", "+@stream",
            "+@geo", "+@bitmap", "+@pubsub", "+@transaction", "+@blocking"), None),
    ("B", g("+get", "+set", "+del", "+expire", "+sort", "+publish"), None),
    ("C", g("+@all", allow_dangerous=True), None),
    ("C", g("+@admin", "+@scripting", keys=("*",), allow_dangerous=True), None),
    ("C", g("+flushall", "+client|kill", "+eval", allow_dangerous=True), None),
    # categories that carry writes, admin, scripts or connection admin
    ("A", g("+@write"), PAST_B), ("A", g("+@string"), READ_ONLY), ("A", g("+@pubsub"), READ_ONLY),
    ("A", g("+publish"), READ_ONLY), ("A", g("+set"), READ_ONLY), ("A", g("+@hash"), READ_ONLY),
    ("A", g("+@keyspace"), PAST_B), ("A", g("+@fast"), PAST_B), ("A", g("+@blocking"), READ_ONLY),
    ("B", g("+@write"), PAST_B), ("B", g("+@keyspace"), PAST_B), ("B", g("+@slow"), PAST_B),
    ("B", g("+@fast"), PAST_B), ("B", g("+@connection"), PAST_B), ("B", g("+@scripting"), PAST_B),
    ("B", g("+@hyperloglog"), PAST_B), ("B", g("+@dangerous"), PAST_B),
    ("B", g("+@admin"), PAST_B), ("B", g("+@all"), PAST_B),
    ("B", g("+@all", "-@dangerous"), PAST_B),
    ("B", g("+@all", "-@admin", "-@dangerous", "-@scripting"), PAST_B),
    ("B", g("-@all", "+@all"), PAST_B), ("B", g("+@read", "+@write", "-flushall"), PAST_B),
    ("B", g("+@READ", "+@ALL"), PAST_B),
    # single commands above zone B
    ("B", g("+eval"), PAST_B), ("B", g("+evalsha"), PAST_B), ("B", g("+fcall"), PAST_B),
    ("B", g("+function|load"), PAST_B), ("B", g("+script|flush"), PAST_B),
    ("B", g("+client|kill"), PAST_B), ("B", g("+client"), PAST_B), ("B", g("+client|list"), PAST_B),
    ("B", g("+flushall"), PAST_B), ("B", g("+FlushAll"), PAST_B),
    ("B", g("+flushall|async"), PAST_B),
    ("B", g("+flushdb"), PAST_B), ("B", g("+swapdb"), PAST_B), ("B", g("+restore"), PAST_B),
    ("B", g("+monitor"), PAST_B), ("B", g("+info"), PAST_B), ("B", g("+save"), PAST_B),
    ("B", g("+bgsave"), PAST_B), ("B", g("+slowlog|reset"), PAST_B), ("B", g("+latency"), PAST_B),
    ("B", g("+pfdebug"), PAST_B), ("B", g("+time"), PAST_B), ("B", g("+cluster|info"), PAST_B),
    ("A", g("+flushall"), PAST_B), ("A", g("+eval_ro"), PAST_B),
    # never, in any zone, flag or not
    *((zone, g("+get", rule, allow_dangerous=zone == "C"), NEVER) for zone in "ABC" for rule in [
        "+acl", "+acl|setuser", "+acl|whoami", "+acl|dryrun", "+config", "+config|get",
        "+CONFIG|GET", "+config|set", "+module", "+module|list", "+debug", "+shutdown",
        "+replicaof", "+slaveof", "+failover", "+migrate", "+sync", "+psync", "+replconf",
        "+cluster", "+cluster|meet", "+cluster|setslot",
    ]),
    # key and channel patterns that can match every name
    *((zone, g("+get", keys=("app:*", pattern)), PAST_B)
      for zone in "AB" for pattern in ["*", "**", "?*", "*?*", "[a-z]*", "[^x]*", "\\app*",
                                       "*app*", "?", "[*]*"]),
    ("B", g("+subscribe", channels=["*"]), PAST_B), ("B", g("+publish", channels=["?*"]), PAST_B),
    ("C", g("+get", keys=("*",)), PAST_B),
    ("C", g("+get", keys=("*",), allow_dangerous=True), None),
    ("A", g("+get", keys=("a*",)), None), ("B", g("+get", keys=("tenant:*:model",)), None),
    # the flag is zone C only
    ("B", g("+get", allow_dangerous=True), "zone C only"),
    # names Redis does not know, and malformed rules
    ("A", g("+nosuchcommand"), "no such command"), ("A", g("+@nosuch"), "no such command"),
    ("A", g("+config|nosuch"), "no such command"), ("A", g("+get", "-nosuch"), "no such command"),
    ("A", g("allcommands"), "rule"), ("A", g("+get ~*"), "rule"), ("A", g("-get"), "'+' rule"),
]
# fmt: on


@pytest.mark.parametrize(("zone", "grant", "expected"), TABLE)
def test_the_zone_ceilings(zone: str, grant: dict[str, Any], expected: str | None) -> None:
    errors = RedisConnector.validate_grant(grant) or RedisConnector.validate_for_zone(grant, zone)
    if expected is None:
        assert errors == []
    else:
        assert any(expected in e for e in errors), errors


def test_dangerous_is_exactly_past_zone_b() -> None:
    assert RedisConnector.dangerous(g("+@write"))
    assert RedisConnector.dangerous(g("+get", keys=("?*",)))
    assert RedisConnector.dangerous(g("+get", channels=["*"]))
    assert not RedisConnector.dangerous(g("+@read", "+@string"))


@pytest.mark.parametrize("zone", "ABC")
def test_hard_rules_remove_what_no_zone_may_have(zone: str) -> None:
    rules = redis_acl.hard_rules(zone)
    assert all(r.startswith("-") for r in rules)
    for name, categories in COMMAND_TABLE.items():
        if redis_acl.forbidden(name, categories):
            family = name.split("|", maxsplit=1)[0]
            assert f"-{family}" in rules or f"-{name}" in rules, name
    if zone != "C":
        assert {"-@admin", "-@scripting", "-flushall", "-flushdb", "-swapdb"} <= set(rules)
    if zone == "A":
        assert {"-@write", "-publish", "-spublish"} <= set(rules)


@pytest.mark.parametrize("zone", "AB")
def test_every_command_under_a_ceiling_is_a_data_command_and_never_admin(zone: str) -> None:
    allowed = {n for n, c in COMMAND_TABLE.items() if redis_acl.beyond(zone, n, c) is None}
    assert {"get", "scan", "ping", "subscribe"} <= allowed
    for name in allowed:
        categories = COMMAND_TABLE[name]
        assert not categories & {"admin", "scripting"}, name
        assert "dangerous" not in categories or name in redis_acl.COSTLY_ONLY, name
        assert zone == "B" or "write" not in categories, name


def test_probe_names_cover_every_class_and_avoid_the_grant() -> None:
    names = redis_acl.probe_names(["app:*", "b", "Z*", "0*"])
    assert len(names) == 6
    assert not any(n.startswith(("app:", "b", "Z", "0")) for n in names)
    assert names[0][0].islower()
    assert names[1][0].isupper()
    assert names[2][0].isdigit()


def test_the_server_account_of_patterns() -> None:
    scoped = {"keys": ["~app:*", "%R~b*"], "channels": ["&alerts:*"], "selectors": []}
    assert redis_acl.unscoped_on_server(scoped) == []
    wide = {"keys": "~app:* %RW~* ~?x", "channels": ["&*"], "selectors": [["commands", "+@all"]]}
    found = redis_acl.unscoped_on_server(wide)
    assert found[:3] == ["%RW~*", "~?x", "&*"]
    assert found[3].startswith("selector")
