"""Redis target: one short-lived ACL user per grant.

``grant`` creates the user disabled, in a single atomic ``ACL SETUSER``:
``reset``, ``off``, the SHA-256 of a random password (``#<hex>``: the password
itself never crosses the wire, so neither ``MONITOR``, the slow log nor a proxy
of the target can show it), ``resetchannels`` (no Pub/Sub unless listed), the
role's command rules followed by the zone's hard ``-`` rules, its key patterns
(read-only ``%R~`` in zone A) and channel patterns. It then asks the server
itself what the user can do: one pipelined ``ACL DRYRUN`` for every
(sub)command the server's ``COMMAND`` table lists (read once per connector),
with random key and channel names no scoped pattern matches, and reads its own
account of the user's key and channel patterns (``ACL GETUSER``). If the server
says the user could run anything above the zone's ceiling, or reach keys or
channels outside its patterns, the user is deleted and the grant refused
(:class:`TargetError` naming what it could do); only then is it turned ``on``.
The zone ceilings and the allowlist model are in
:mod:`breakglass.connectors.redis_acl`. ``revoke`` turns the
user ``off`` (no new logins), kills every connection authenticated as it
(``CLIENT KILL USER``; ``off`` alone leaves open connections working), then
deletes it.

Needs Redis 7.0 or later (``ACL DRYRUN``, ``%R~`` key patterns, subcommand
rules); on an older server every grant is refused, since the server cannot
confirm what the user could do.

Redis has no native expiry for ACL users: the broker's expiry loop is the
only lock, so a broker that is down leaves the user working until it comes
back and revokes. Roles on Redis should therefore carry short TTLs. Users are
not written to an ACL file (no ``ACL SAVE``); a Redis restart that loads an
ACL file forgets them, which only ever removes access.

Target config::

    url: redis://default:ADMINPW@cache.internal:6379/0   # admin connection (required)
    client_url: rediss://cache.example:6380/0            # optional: what credentials show
    client_host / client_port                            # optional: finer overrides

Grant block::

    keys: ["features:*"]             # glob patterns (required); outside zone C each starts
                                     # with a literal prefix ("*", "?*", "[a-z]*" are refused)
    commands: ["+@read", "-keys"]    # +/- command, command|sub or @category rules (required)
    channels: ["alerts:*"]           # optional Pub/Sub patterns, same prefix rule; default none
    allow_dangerous: false           # zone C only: rules past zone B's ceiling, unscoped keys

Each ``+`` rule must, on its own, stay under the zone's ceiling (``-`` rules
never make a ``+`` rule acceptable): zone A reads (``+@read``, read commands,
subscribing), zone B also writes data (``+@string``, ``+@hash``, ``+set``...)
but never ``@admin``, ``@scripting`` or ``@dangerous`` (``+@write``,
``+@keyspace`` and ``+@all`` contain ``FLUSHALL``), zone C may go further with
``allow_dangerous``. ACL, CONFIG, MODULE, DEBUG, SHUTDOWN, replication,
failover, MIGRATE and CLUSTER administration are granted in no zone: a rule
naming one is refused, and a category containing one (``+@admin`` in zone C)
loses it to the hard ``-`` rules. :meth:`RedisConnector.dangerous` tells whether
a grant block needs ``allow_dangerous``.

The ACL user name is the deployment's marker (:meth:`Ownership.ref_for`): the
marker prefix, up to 32 lowercase letters and digits taken from the grant ID,
and the deployment's tag (``bg_r0f3a...g0_5c1e...``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import redis

from breakglass.connectors import redis_acl as acl
from breakglass.connectors.base import (
    Connector,
    GrantSpec,
    IssuedCredential,
    Ownership,
    StandingPrivilege,
)
from breakglass.domain.errors import TargetError

_USER = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_MAX_PATTERN = 200
_KEY_PROBES = 4  # allowed key/channel commands asked again with names of every class
STANDING_RULES = frozenset({"+@all", "allcommands", "+@admin", "+@dangerous"})
_GRANT_FIELDS = frozenset({"keys", "commands", "channels", "allow_dangerous"})


def user_name_for(ownership: Ownership, grant_id: str) -> str:
    """The ACL user name of a grant: the deployment's marker for the grant's ID."""
    return ownership.ref_for(grant_id)


def is_user_name(ownership: Ownership, name: str) -> bool:
    """Whether ``name`` is shaped like an ACL user the broker makes (its prefix, lowercase)."""
    return bool(_USER.match(name)) and ownership.looks_like(name)


class RedisConnector(Connector):
    type = "redis"
    _probe_table: tuple[acl.Probe, ...] | None = None
    """The live server's command table, read once per connector (see :meth:`_excess`)."""

    def __init__(self, name: str, config: Mapping[str, Any], *, ownership: Ownership) -> None:
        super().__init__(name, config, ownership=ownership)
        self._url = str(config["url"])
        admin = urlsplit(self._url)
        shown = urlsplit(str(config.get("client_url") or self._url))
        self._scheme = shown.scheme or "redis"
        self._host = str(config.get("client_host") or shown.hostname or "127.0.0.1")
        self._port = int(config.get("client_port") or shown.port or 6379)
        self._db = (shown.path or "/0").lstrip("/") or "0"
        self._admin_password = admin.password or ""
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[str]:
        url = config.get("url")
        if not url or not isinstance(url, str):
            return ["url: required (an admin redis:// or rediss:// URL)"]
        if urlsplit(url).scheme not in {"redis", "rediss"}:
            return ["url: must start with redis:// or rediss://"]
        return []

    @classmethod
    def validate_grant(cls, grant: Mapping[str, Any]) -> list[str]:
        """Schema, names known to Redis 7.0, never-granted commands, and the
        ``allow_dangerous`` opt-in for anything above zone B (see :mod:`.redis_acl`)."""
        errors: list[str] = []
        unknown = set(grant) - _GRANT_FIELDS
        if unknown:
            errors.append(f"unknown field(s) {sorted(unknown)}")
        errors += _check_patterns("keys", grant.get("keys"), required=True)
        errors += _check_patterns("channels", grant.get("channels", []), required=False)
        errors += _check_rules(grant.get("commands"))
        allow = grant.get("allow_dangerous", False)
        if not isinstance(allow, bool):
            errors.append("allow_dangerous: must be true or false")
        elif not errors and not allow and cls.dangerous(grant):
            above_b = {n: r for rule in _plus_rules(grant) for n, r in acl.above("B", rule).items()}
            what = acl.shown(above_b) if above_b else (
                f"a pattern that can match every name: {acl.unscoped(_patterns(grant))!r}")
            errors.append(
                f"commands/keys: reaches past zone B: {what}; only a zone C role with "
                "allow_dangerous: true may go past zone B (and 'never granted' commands are "
                "removed even there)"
            )
        return errors

    @classmethod
    def validate_for_zone(cls, grant: Mapping[str, Any], zone: str) -> list[str]:
        """Every ``+`` rule, on its own, under the zone's ceiling; outside zone C every key
        and channel pattern starts with a literal prefix."""
        if zone == "C":
            return []
        errors = []
        for rule in _plus_rules(grant):
            found = acl.above(zone, rule)
            if found:
                errors.append(f"commands: {rule!r} reaches {acl.shown(found)}; "
                              f"{acl.CEILINGS.get(zone, acl.CEILINGS['A'])}")
        for field in ("keys", "channels"):
            wide = acl.unscoped(grant.get(field) or [])
            if wide:
                errors.append(f"{field}: {wide!r} can match every name; outside zone C a "
                              "pattern starts with a literal prefix (e.g. 'app:*')")
        if grant.get("allow_dangerous"):
            errors.append("allow_dangerous: zone C only")
        return errors

    @classmethod
    def dangerous(cls, grant: Mapping[str, Any]) -> bool:
        """True when the grant reaches past zone B's ceiling (needs ``allow_dangerous``)."""
        if any(acl.above("B", rule) for rule in _plus_rules(grant)):
            return True
        return bool(acl.unscoped(_patterns(grant)))

    # -- connection -------------------------------------------------------------------

    @contextmanager
    def _admin(self, *also_secret: str) -> Iterator[redis.Redis]:
        """The admin client (pooled, thread-safe); driver errors become TargetError."""
        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self._url,
                    protocol=2,
                    decode_responses=True,
                    socket_timeout=5,
                    socket_connect_timeout=5,
                )
            client = self._client
        try:
            yield client
        except redis.RedisError as exc:
            text = f"{type(exc).__name__}: {_first_line(exc)}"
            for secret in (self._url, self._admin_password, *also_secret):
                if secret:
                    text = text.replace(secret, "***")
            raise TargetError(f"redis target {self.name}: {text}") from exc

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- contract ---------------------------------------------------------------------

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        errors = self.validate_grant(spec.grant) or self.validate_for_zone(spec.grant, spec.zone)
        if errors:
            raise TargetError(f"redis target {self.name}: invalid grant: {'; '.join(errors)}")
        user = user_name_for(self.ownership, spec.grant_id)
        if not is_user_name(self.ownership, user):
            raise TargetError(f"grant id {spec.grant_id!r} gives no valid ACL user name")
        password = secrets.token_urlsafe(32)
        with self._admin(password) as client:
            # Created "off" in one atomic ACL SETUSER, every rule its own argument; the
            # password travels only as its SHA-256 ("#<hex>"), so no log or MONITOR of the
            # target can show it. Enabled only once the server confirms the ceiling.
            client.acl_setuser(
                user,
                reset=True,
                reset_channels=True,
                enabled=False,
                hashed_passwords=[f"+{hashlib.sha256(password.encode()).hexdigest()}"],
                commands=_command_rules(spec),
                keys=[f"{_key_access(spec.zone)}{k}" for k in spec.grant["keys"]],
                channels=[str(c) for c in spec.grant.get("channels", [])],
            )
            try:
                found = self._excess(client, user, spec.zone, _patterns(spec.grant))
            except BaseException:
                client.acl_deluser(user)
                raise
            if found:
                client.acl_deluser(user)
                raise TargetError(
                    f"redis target {self.name}: refused: the server says user {user} could "
                    f"run {acl.shown(found)}, beyond zone {spec.zone}'s ceiling; the user "
                    "was deleted"
                )
            client.acl_setuser(user, enabled=True)  # only "on": the checked rules stay
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return IssuedCredential(
            target_ref=user,
            secret={
                "type": "redis",
                "url": f"{self._scheme}://{auth}@{self._host}:{self._port}/{self._db}",
                "username": user,
                "password": password,
                "host": self._host,
                "port": self._port,
                "expires_at": spec.expires_at.isoformat(),
            },
        )

    def _excess(
        self, client: redis.Redis, user: str, zone: str, patterns: Sequence[str] = ()
    ) -> dict[str, str]:
        """Ask the server what ``user`` may do beyond the zone's ceiling: one pipelined
        ``ACL DRYRUN`` per (sub)command it knows, key and channel arguments random names;
        then, for a few allowed commands that take a key or channel, names of every
        character class that do not start like ``patterns`` (the grant's own)."""
        asked = self._probe_table
        if asked is None:
            asked = self._probe_table = acl.probes(client.command())
        pipe = client.pipeline(transaction=False)
        for probe in asked:
            pipe.acl_dryrun(user, *probe.argv(acl.probe_token()))
        pipe.acl_getuser(user)
        *replies, info = pipe.execute(raise_on_error=False)
        found = acl.excess(zone, asked, replies)
        if zone == "C" or found:
            return found
        if not isinstance(info, dict):
            return {"ACL GETUSER": f"unreadable answer {type(info).__name__}"}
        found.update(dict.fromkeys(acl.unscoped_on_server(info), "can match every name"))
        keyed = acl.reaches(asked, replies)[:_KEY_PROBES]
        for probe in keyed:
            for name in acl.probe_names(patterns):
                pipe.acl_dryrun(user, *probe.argv(name))
        replies = pipe.execute(raise_on_error=False)
        per = len(replies) // max(1, len(keyed))
        for i, probe in enumerate(keyed):
            if "OK" in replies[i * per : (i + 1) * per]:
                found[probe.name] = acl.OUTSIDE
        return found

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        del artefacts
        if not is_user_name(self.ownership, target_ref):
            raise TargetError(f"refusing to revoke {target_ref!r}: not a broker-managed user")
        with self._admin() as client:
            if client.acl_getuser(target_ref) is None:
                return
            client.acl_setuser(target_ref, enabled=False)  # only "off": rules stay as they are
            try:
                client.client_kill_filter(user=target_ref)
            except redis.ResponseError as exc:  # deleted meanwhile: nothing left to kill
                if "no such user" not in str(exc).lower():
                    raise
            client.acl_deluser(target_ref)

    def planned_ref(self, grant_id: str) -> str | None:
        return user_name_for(self.ownership, grant_id)

    def verify(self, target_ref: str) -> bool:
        with self._admin() as client:
            info = client.acl_getuser(target_ref)
        flags = info.get("flags") if isinstance(info, dict) else None
        return isinstance(flags, list) and "on" in flags

    def list_managed(self) -> list[str]:
        with self._admin() as client:
            users = client.acl_users()
        return sorted(str(u) for u in users if self.ownership.looks_like(str(u)))

    def inventory(self) -> list[StandingPrivilege]:
        """Enabled users with ``+@all``/``allcommands``/``+@admin``/``+@dangerous``,
        and any enabled ``nopass`` user (whoever reaches the port is that user)."""
        with self._admin() as client:
            lines = client.acl_list()
        found = []
        for line in lines:
            _, subject, *rules = str(line).split()
            if "on" not in rules:
                continue
            kinds = [r for r in rules if r in STANDING_RULES or r == "nopass"]
            if kinds:
                shown = [r for r in rules if not r.startswith(("#", ">", "<"))]
                found.append(
                    StandingPrivilege(
                        target=self.name,
                        subject=subject,
                        privilege=" ".join(kinds),
                        detail=" ".join(shown),
                    )
                )
        return found


def _key_access(zone: str) -> str:
    """Zone A keys are readable only (``%R~``), whatever the commands say."""
    return "~" if zone in {"B", "C"} else "%R~"


def _command_rules(spec: GrantSpec) -> list[str]:
    """The catalog's rules, then the zone's hard ``-`` rules (no order re-enables those)."""
    return [*(str(c).lower() for c in spec.grant["commands"]), *acl.hard_rules(spec.zone)]


def _patterns(grant: Mapping[str, Any]) -> list[str]:
    return [str(p) for p in (*(grant.get("keys") or []), *(grant.get("channels") or []))]


def _plus_rules(grant: Mapping[str, Any]) -> list[str]:
    return [str(c).lower() for c in grant.get("commands") or [] if str(c).startswith("+")]


def _check_rules(commands: Any) -> list[str]:
    if not isinstance(commands, list) or not commands:
        return ["commands: a non-empty list of +/- rules is required"]
    bad = [c for c in commands if not isinstance(c, str) or not acl.RULE.match(c)]
    if bad:
        return [f"commands: not a '+cmd', '-cmd', '+cmd|sub' or '+@category' rule: {bad!r}"]
    if not any(c.startswith("+") for c in commands):
        return ["commands: at least one '+' rule is required"]
    unknown = [c for c in commands if acl.members(c) is None]
    if unknown:
        return [f"commands: no such command, subcommand or category in Redis 7.0: {unknown!r}"]
    never = {n: r for c in commands if c.startswith("+") and not c.startswith("+@")
             for n, r in acl.above("C", c.lower()).items()}
    if never:
        return [f"commands: {acl.shown(never)}: ACL, CONFIG, MODULE, DEBUG, SHUTDOWN, "
                "replication, failover, MIGRATE and CLUSTER administration are granted in no "
                "zone, not even with allow_dangerous"]
    return []


def _check_patterns(field: str, value: Any, *, required: bool) -> list[str]:
    if not isinstance(value, list) or (required and not value):
        return [f"{field}: a {'non-empty ' * required}list of glob patterns is required"]
    bad = [
        p
        for p in value
        if not isinstance(p, str)
        or not p
        or len(p) > _MAX_PATTERN
        or _UNSAFE.search(p)
        or p[0] in "~%&"
    ]
    if bad:
        return [
            f"{field}: not a plain glob pattern (no whitespace, control characters or "
            f"leading ~ % &): {bad!r}"
        ]
    return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
