"""What a Redis ACL grant may reach: an allowlist per zone, and the server's verdict.

Nothing here matches rule text against a list of bad names. Every ``+`` rule is
expanded to the (sub)commands it enables, using Redis's own command table, and
each of them must sit under the ceiling of the role's zone:

* **never, in any zone** (:data:`FORBIDDEN_FAMILIES`, and the ``@admin``
  subcommands of ``CLUSTER``): changing users, ACLs or config, loading code into
  the server, debugging, shutting down, replication and failover, moving keys to
  another server. ``allow_dangerous`` does not lift this.
* **zone C**: everything else. A rule reaching past zone B, or a key or channel
  pattern without a literal prefix, needs ``allow_dangerous: true`` (zone C only).
* **zone B**: data commands only (``@read``, ``@write``, ``@pubsub``,
  ``@connection``, ``@transaction``), never one in ``@admin``, ``@scripting`` or
  ``@dangerous`` (``FLUSHALL``, ``SWAPDB``, ``RESTORE``, ``INFO``...), except
  :data:`COSTLY_ONLY` (dangerous only for their cost; key patterns still apply).
* **zone A**: as zone B, without ``@write`` commands and without publishing.

So ``+@slow``, ``+@connection`` or ``+@all -@dangerous`` fail below zone C
because of what they contain, whatever follows them: ``-`` rules are free, but
they never make a ``+`` rule acceptable. Outside zone C every key and channel
pattern must start with a literal character (``app:*``, not ``*``, ``?*`` or
``[a-z]*``), so it can never match every name.

The broker then appends :func:`hard_rules` after the catalog's rules, and asks
the live server what the user can actually run (:func:`excess` over
``ACL DRYRUN`` replies) before it enables it.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from breakglass.connectors.redis_commands import CATEGORIES, COMMAND_TABLE

FORBIDDEN_FAMILIES = frozenset({
    "acl", "config", "module", "debug", "shutdown", "replicaof", "slaveof", "failover",
    "migrate", "sync", "psync", "replconf",
})
"""Commands no grant may reach, with every subcommand (``CLUSTER`` admin is added)."""
COSTLY_ONLY = frozenset({"keys", "sort", "sort_ro"})
"""``@dangerous`` only because they can be slow; their keys are still checked."""
_PUBLISH = frozenset({"publish", "spublish"})
_DATA = frozenset({"read", "write", "pubsub", "connection", "transaction"})
_GLOB = "*?[\\"
OUTSIDE = "reaches keys or channels outside its patterns"
_DENIED_RUN = re.compile(r"no permissions to run the '[^']*' command")
RULE = re.compile(r"^[+-](@[a-z]+|[a-z][a-z0-9_-]*(\|[a-z0-9_-]+)?)$", re.IGNORECASE)
CEILINGS = {
    "A": "zone A is read-only",
    "B": "zone B may read and write data, never administer the server, run scripts "
         "or act on the whole keyspace",
    "C": "no zone may change users, ACLs or config",
}


def forbidden(name: str, categories: Iterable[str]) -> bool:
    """True for a (sub)command no zone may be granted."""
    family = name.split("|", maxsplit=1)[0]
    return family in FORBIDDEN_FAMILIES or (family == "cluster" and "admin" in categories)


def beyond(zone: str, name: str, categories: frozenset[str]) -> str | None:
    """Why ``name`` is above ``zone``'s ceiling, or None. Unknown zones read as A."""
    if forbidden(name, categories):
        return "never granted"
    if zone == "C":
        return None
    for category in ("admin", "scripting"):
        if category in categories:
            return f"@{category}"
    if "dangerous" in categories and name not in COSTLY_ONLY:
        return "@dangerous"
    if name.endswith("|help"):
        return None  # prints the command's usage, nothing else
    if not categories & _DATA:
        return "not a data command"
    if zone != "B" and ("write" in categories or name in _PUBLISH):
        return "writes"
    return None


def members(rule: str) -> frozenset[str] | None:
    """The (sub)commands a rule such as ``+@read``, ``+config`` or ``-config|get`` names;
    None when Redis 7.0 knows no such command or category."""
    body = rule[1:].lower()
    if body.startswith("@"):
        category = body[1:]
        if category == "all":
            return frozenset(COMMAND_TABLE)
        if category not in CATEGORIES:
            return None
        return frozenset(n for n, cats in COMMAND_TABLE.items() if category in cats)
    if body in COMMAND_TABLE:
        return frozenset({body})
    family, _, first_arg = body.partition("|")
    subcommands = frozenset(n for n in COMMAND_TABLE if n.startswith(family + "|"))
    if subcommands:
        return None if first_arg else subcommands
    return frozenset({family}) if family in COMMAND_TABLE else None


def above(zone: str, rule: str) -> dict[str, str]:
    """What a ``+`` rule reaches above ``zone``'s ceiling: name -> reason."""
    found = {}
    for name in sorted(members(rule) or ()):
        reason = beyond(zone, name, COMMAND_TABLE[name])
        if reason:
            found[name] = reason
    return found


def shown(found: Mapping[str, str], limit: int = 6) -> str:
    """``acl|setuser (never granted), config|get (never granted), ... (+3 more)``."""
    items = [f"{name} ({reason})" for name, reason in list(found.items())[:limit]]
    more = f" (+{len(found) - limit} more)" if len(found) > limit else ""
    return ", ".join(items) + more


def unscoped(patterns: Iterable[Any]) -> list[str]:
    """Patterns that do not start with a literal character, so may match any name."""
    return [str(p) for p in patterns if not str(p) or str(p)[0] in _GLOB]


def hard_rules(zone: str) -> list[str]:
    """``-`` rules the broker appends after the catalog's, so no rule order re-enables
    what the zone never allows."""
    rules = [f"-{f}" for f in sorted(FORBIDDEN_FAMILIES)]
    rules += [f"-{n}" for n, c in sorted(COMMAND_TABLE.items())
              if n.startswith("cluster|") and forbidden(n, c)]
    if zone == "C":
        return rules
    rules += ["-@admin", "-@scripting"]
    rules += [f"-{n}" for n, c in sorted(COMMAND_TABLE.items())
              if "dangerous" in c and not c & {"admin", "scripting"}
              and n not in COSTLY_ONLY and not forbidden(n, c)]
    if zone != "B":
        rules += ["-@write", *(f"-{n}" for n in sorted(_PUBLISH))]
    return rules


# -- the server as oracle -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """One (sub)command of the live server's table, as ``ACL DRYRUN`` is asked about it."""

    name: str
    arity: int
    categories: frozenset[str]
    names_first: bool
    """Its first argument is a key or channel Redis checks (so a random one must fail)."""

    def argv(self, token: str) -> list[str]:
        """The shortest argument list ``DRYRUN`` accepts, every argument ``token``."""
        parts = self.name.split("|")
        return parts + [token] * max(0, abs(self.arity) - len(parts))


def probes(table: Mapping[str, Any]) -> tuple[Probe, ...]:
    """Every leaf (sub)command of a ``COMMAND`` reply as redis-py parses it."""
    found = []
    for name, info in table.items():
        subcommands = info.get("subcommands") or []
        found += [_probe(str(sub[0]), int(sub[1]), sub[6], sub[8]) for sub in subcommands]
        if not subcommands:
            found.append(_probe(str(name), int(info["arity"]), info["acl_categories"],
                                info.get("key_specifications") or []))
    return tuple(found)


def _probe(name: str, arity: int, categories: Sequence[Any], specs: Sequence[Any]) -> Probe:
    cats = frozenset(str(c).lstrip("@").lower() for c in categories)
    words = len(name.split("|"))
    keyed = bool(specs) and all(_simple_spec(spec, abs(arity)) for spec in specs)
    channel = ("pubsub" in cats and words == 1 and abs(arity) > 1
               and "unsubscribe" not in name)
    return Probe(name.lower(), arity, cats, keyed or channel)


def _simple_spec(spec: Sequence[Any], argc: int) -> bool:
    """A key spec that finds its keys at a fixed position within the shortest call."""
    fields = dict(zip(spec[::2], spec[1::2], strict=False))
    begin = dict(zip(fields.get("begin_search", [])[::2],
                     fields.get("begin_search", [])[1::2], strict=False))
    find = dict(zip(fields.get("find_keys", [])[::2],
                    fields.get("find_keys", [])[1::2], strict=False))
    index = dict(zip(begin.get("spec", [])[::2], begin.get("spec", [])[1::2], strict=False))
    return (begin.get("type") == "index" and find.get("type") == "range"
            and 0 < int(index.get("index", 0)) < argc
            and "not_key" not in (fields.get("flags") or []))


_FIRST_CHARS = (string.ascii_lowercase, string.ascii_uppercase, string.digits,
                string.punctuation, "\x01\x7f", "\u00e9\u4e2d")


def probe_token() -> str:
    """A key/channel name no literal-prefixed pattern matches (it starts with \\x01)."""
    return "\x01bg-probe:" + secrets.token_hex(8)


def probe_names(patterns: Iterable[Any]) -> list[str]:
    """Random names, one starting with a character of each class (lower, upper, digit,
    punctuation, control, non-ASCII), none starting with a literal prefix of
    ``patterns``: a pattern such as ``[a-z]*`` or ``[^x]*`` matches one of them."""
    prefixes = [_literal_prefix(str(p)) for p in patterns]
    names = []
    for chars in _FIRST_CHARS:
        while True:
            name = secrets.choice(chars) + secrets.token_hex(6)
            if not any(p and name.startswith(p) for p in prefixes):
                break
        names.append(name)
    return names


def _literal_prefix(pattern: str) -> str:
    cut = [i for i in (pattern.find(c) for c in _GLOB) if i >= 0]
    return pattern[: min(cut)] if cut else pattern


def unscoped_on_server(user: Mapping[str, Any]) -> list[str]:
    """Key and channel patterns of an ``ACL GETUSER`` reply (the server's own account of
    them) that do not start with a literal character, and any selector."""
    found = []
    for field in ("keys", "channels"):
        value = user.get(field) or []
        for pattern in value.split() if isinstance(value, str) else value:
            body = str(pattern).split("~", 1)[-1] if field == "keys" else str(pattern)[1:]
            if str(pattern) in {"allkeys", "allchannels"} or unscoped([body]):
                found.append(str(pattern))
    return found + [f"selector {s}" for s in user.get("selectors") or []]


def reaches(asked: Sequence[Probe], replies: Sequence[Any]) -> list[Probe]:
    """Allowed probes whose first argument is a checked key or channel: a random name
    answered ``OK`` there means the pattern did not stop it."""
    return [p for p, reply in zip(asked, replies, strict=True)
            if p.names_first and not (isinstance(reply, str) and _DENIED_RUN.search(reply))]


def excess(zone: str, asked: Sequence[Probe], replies: Sequence[Any]) -> dict[str, str]:
    """What the server says a user can do beyond ``zone``'s ceiling: name -> reason.

    ``replies`` are the ``ACL DRYRUN`` answers to ``asked``, in order. Only an
    explicit "no permissions to run" counts as denied: any other answer (``OK``,
    a key or channel refusal, an error) means the command itself is allowed."""
    found = {}
    for probe, reply in zip(asked, replies, strict=True):
        if isinstance(reply, str) and _DENIED_RUN.search(reply):
            continue
        reason = beyond(zone, probe.name, probe.categories)
        if reason:
            found[probe.name] = reason
        elif zone != "C" and reply == "OK" and probe.names_first:
            found[probe.name] = OUTSIDE
    return dict(sorted(found.items(), key=lambda item: (item[1] != "never granted", item[0])))
