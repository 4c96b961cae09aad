"""Redis target: one short-lived ACL user per grant.

``grant`` creates the user in a single atomic ``ACL SETUSER``: ``reset``, a
random password, ``resetchannels`` (no Pub/Sub unless listed), the role's key
patterns, channel patterns and command rules, then ``on``. ``revoke`` turns the
user ``off`` (no new logins), kills every connection authenticated as it
(``CLIENT KILL USER``; ``off`` alone leaves open connections working), then
deletes it.

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

    keys: ["features:*"]             # plain glob patterns (required); each becomes ~pattern
    commands: ["+@read", "-keys"]    # +/- command or @category rules (required)
    channels: ["alerts:*"]           # optional Pub/Sub patterns; default none
    allow_dangerous: false           # needed for +@all, +@admin, +@dangerous,
                                     # admin commands (CONFIG, FLUSHALL, ...) and key pattern "*"

:meth:`RedisConnector.dangerous` tells whether a grant block needs
``allow_dangerous``; the catalog refuses such grants outside zone C.

The ACL user name is the deployment's marker (:meth:`Ownership.ref_for`): the
marker prefix, up to 32 lowercase letters and digits taken from the grant ID,
and the deployment's tag (``bg_r0f3a...g0_5c1e...``).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import redis

from breakglass.connectors.base import (
    Connector,
    GrantSpec,
    IssuedCredential,
    Ownership,
    StandingPrivilege,
)
from breakglass.domain.errors import TargetError

_USER = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
_RULE = re.compile(r"^[+-](@[a-z]+|[a-z][a-z0-9_-]*(\|[a-z0-9_-]+)?)$", re.IGNORECASE)
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_MAX_PATTERN = 200
DANGEROUS_CATEGORIES = frozenset({"+@all", "+@admin", "+@dangerous"})
# fmt: off
DANGEROUS_COMMANDS = frozenset({
    "acl", "bgrewriteaof", "bgsave", "client", "cluster", "config", "debug", "failover",
    "flushall", "flushdb", "migrate", "module", "monitor", "psync", "replicaof", "restore",
    "save", "shutdown", "slaveof", "swapdb", "sync",
})
# fmt: on
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
        errors: list[str] = []
        unknown = set(grant) - _GRANT_FIELDS
        if unknown:
            errors.append(f"unknown field(s) {sorted(unknown)}")
        errors += _check_patterns("keys", grant.get("keys"), required=True)
        errors += _check_patterns("channels", grant.get("channels", []), required=False)
        commands = grant.get("commands")
        if not isinstance(commands, list) or not commands:
            errors.append("commands: a non-empty list of +/- rules is required")
        else:
            bad = [c for c in commands if not isinstance(c, str) or not _RULE.match(c)]
            if bad:
                errors.append(f"commands: not a '+cmd', '-cmd' or '+@category' rule: {bad!r}")
            elif not any(c.startswith("+") for c in commands):
                errors.append("commands: at least one '+' rule is required")
        allow = grant.get("allow_dangerous", False)
        if not isinstance(allow, bool):
            errors.append("allow_dangerous: must be true or false")
        elif not errors and not allow and cls.dangerous(grant):
            errors.append(
                "commands/keys: admin or dangerous access (+@all, +@admin, +@dangerous, admin "
                "commands or key pattern '*') needs allow_dangerous: true on a zone C role"
            )
        return errors

    @classmethod
    def dangerous(cls, grant: Mapping[str, Any]) -> bool:
        """True when the grant reaches admin or dangerous commands, or every key."""
        rules = [str(c).lower() for c in grant.get("commands") or []]
        if any(r in DANGEROUS_CATEGORIES for r in rules):
            return True
        if any(r[1:].split("|")[0] in DANGEROUS_COMMANDS for r in rules if r.startswith("+")):
            return True
        return "*" in (grant.get("keys") or [])

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
        errors = self.validate_grant(spec.grant)
        if errors:
            raise TargetError(f"redis target {self.name}: invalid grant: {'; '.join(errors)}")
        user = user_name_for(self.ownership, spec.grant_id)
        if not is_user_name(self.ownership, user):
            raise TargetError(f"grant id {spec.grant_id!r} gives no valid ACL user name")
        password = secrets.token_urlsafe(32)
        with self._admin(password) as client:
            # One atomic ACL SETUSER, every rule its own argument:
            # reset, resetchannels, on, >password, +/-rules, ~keys, &channels.
            client.acl_setuser(
                user,
                reset=True,
                reset_channels=True,
                enabled=True,
                passwords=[f"+{password}"],
                commands=[str(c) for c in spec.grant["commands"]],
                keys=[f"~{k}" for k in spec.grant["keys"]],
                channels=[str(c) for c in spec.grant.get("channels", [])],
            )
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
