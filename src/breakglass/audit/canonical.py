"""Canonical JSON (RFC 8785, the JSON Canonicalization Scheme) for audit leaves.

The leaf of an audit event is the canonical JSON of its mapping, so the same
event hashes to the same bytes in every process and every language that
implements JCS. Only the JSON an event needs is admitted: ``str``, ``int``
within ±(2**53 - 1) (the integers a JCS number represents exactly), ``bool``,
``None``, ``list``/``tuple`` and ``dict`` with ``str`` keys. Floats are
refused: their text form is where implementations disagree, and an audit
event has no need of them.

For these types JCS is exactly Python's ``json.dumps`` with sorted keys,
compact separators and raw UTF-8, with one exception: JCS orders keys by
UTF-16 code units and Python by code points, which differ only for keys
holding characters beyond the Basic Multilingual Plane. Objects with such
keys take a slower exact path. The C encoder keeps verifying a million
events well under ten seconds; the ``rfc8785`` package is the reference the
tests compare against.

A row's leaf is the canonical JSON of the row without ``leaf_hash``, the one
field derived from the leaf. A row sealed with :func:`seal_event` also carries
``prev_hash`` (the hex leaf hash of the row before, ``None`` for row 0) inside
it, so such rows form a hash chain too; the broker's own rows rely on the
Merkle tree alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from breakglass.domain.errors import AuditError

MAX_SAFE_INTEGER = 2**53 - 1
_sha256 = hashlib.sha256

_SCALARS = frozenset({str, bool, type(None)})
_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_encode = _encoder.encode


def _refuse(obj: Any) -> bool:
    raise AuditError(f"type {type(obj).__name__} is not allowed in audit events")


# The C encoder built once: JSONEncoder.encode builds a new one on every call,
# a third of the cost. Cycles are caught as RecursionError instead of by markers.
_make_c_encoder: Callable[..., Callable[[Any, int], Sequence[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_c_encoder = (
    _make_c_encoder(
        None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
    if _make_c_encoder is not None
    else None
)


def canonical_json(obj: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``obj``; ``AuditError`` if not representable."""
    if type(obj) is not dict and isinstance(obj, Mapping):
        obj = dict(obj)
    try:
        if not _fast_path_ok(obj):
            text = _slow(obj)
        elif _c_encoder is not None and type(obj) is dict:
            text = "".join(_c_encoder(obj, 0))
        else:
            text = _encode(obj)
        return text.encode("utf-8")
    except RecursionError as exc:
        raise AuditError("audit event is nested too deeply or refers to itself") from exc
    except UnicodeEncodeError as exc:
        raise AuditError("audit event holds a lone surrogate: not valid Unicode") from exc


def canonical_split(obj: Mapping[str, Any], key: str) -> tuple[bytes, bytes]:
    """The canonical bytes of ``obj`` before and after the value of ``key``.

    For any integer ``n`` JCS writes as its decimal digits,
    ``before + str(n).encode() + after`` is ``canonical_json({**obj, key: n})``:
    a writer that learns ``n`` last can still hash the exact leaf. ``key`` must
    be ASCII (its place among the other keys is then the same in UTF-16 and in
    code-point order only if they are ASCII too, which is checked).
    """
    others = {k: v for k, v in obj.items() if k != key}
    if not key.isascii() or not all(k.isascii() for k in others):
        raise AuditError("canonical_split needs ASCII keys at the top level")
    lower = {k: v for k, v in others.items() if k < key}
    upper = {k: v for k, v in others.items() if k > key}
    member = b'"' + key.encode() + b'":'
    before = canonical_json(lower)[:-1] + (b"," if lower else b"") + member
    after = (b"," + canonical_json(upper)[1:]) if upper else b"}"
    return before, after


def _fast_path_ok(obj: Any) -> bool:
    """Check that ``obj`` is admitted; False when a key needs UTF-16 ordering."""
    kind = type(obj)
    if kind is dict:
        try:
            keys = "".join(obj)
        except TypeError as exc:
            raise AuditError("audit object keys must be strings") from exc
        ok = keys.isascii() or max(keys) <= "\uffff"
        values: Iterable[Any] = obj.values()
    elif kind is list or kind is tuple:
        ok, values = True, obj
    else:
        return _other_ok(obj)
    for value in values:
        kind = type(value)
        if kind in _SCALARS or (kind is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER):
            continue
        if not _fast_path_ok(value):
            ok = False
    return ok


def _other_ok(obj: Any) -> bool:
    """The rarer cases: subclasses (``StrEnum``, ``IntEnum``), bad numbers, bad types."""
    if isinstance(obj, str | bool) or obj is None:
        return True
    if isinstance(obj, int):
        if -MAX_SAFE_INTEGER <= obj <= MAX_SAFE_INTEGER:
            return True
        raise AuditError(f"integer {obj} is outside the range JSON numbers hold exactly")
    if isinstance(obj, float):
        raise AuditError("floats are not allowed in audit events: use an integer or a string")
    if isinstance(obj, dict):
        return _fast_path_ok(dict(obj))
    if isinstance(obj, list | tuple):
        return _fast_path_ok(list(obj))
    return _refuse(obj)


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _slow(obj: Any) -> str:
    """Exact JCS for objects whose keys need UTF-16 ordering (already validated)."""
    if isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: _utf16_key(kv[0]))
        inner = ",".join(f"{_encode(k)}:{_slow(v)}" for k, v in items)
        return "{" + inner + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(_slow(v) for v in obj) + "]"
    return _encode(obj)


# -- rows: their leaf, their sealing, their JSON Lines form --------------------

LEAF_HASH_FIELD = "leaf_hash"
PREV_HASH_FIELD = "prev_hash"


def event_leaf_bytes(event: Mapping[str, Any]) -> bytes:
    """The leaf data of a row: its canonical JSON without ``leaf_hash``."""
    data = dict(event)
    data.pop(LEAF_HASH_FIELD, None)
    return canonical_json(data)


def event_leaf_hash(event: Mapping[str, Any]) -> bytes:
    return _sha256(b"\x00" + event_leaf_bytes(event)).digest()


def seal_event(event: Mapping[str, Any], prev_leaf_hash: bytes | None) -> dict[str, Any]:
    """The row to store: ``event`` with ``prev_hash`` and ``leaf_hash`` filled in."""
    sealed = {k: v for k, v in event.items() if k != LEAF_HASH_FIELD}
    sealed[PREV_HASH_FIELD] = prev_leaf_hash.hex() if prev_leaf_hash is not None else None
    sealed[LEAF_HASH_FIELD] = event_leaf_hash(sealed).hex()
    return sealed


@dataclass(frozen=True)
class BadRow:
    """A row of an export that could not be read as a JSON object."""

    line: int
    error: str


class JsonLine(dict[str, Any]):
    """A row read from JSON Lines, keeping its bytes for the fast leaf check."""

    __slots__ = ("raw",)
    raw: bytes


def read_jsonl(lines: Iterable[str | bytes]) -> Iterator[JsonLine | BadRow]:
    """Rows of a JSON Lines export; unreadable lines become :class:`BadRow`.

    Parsed with orjson, a strict RFC 8259 parser about four times faster than
    ``json`` here (parsing is most of a verification's time). It refuses what
    no canonical line holds (NaN, lone surrogates, invalid UTF-8) and reads an
    integer beyond 64 bits as a float, which the canonical encoder refuses.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = line if isinstance(line, bytes) else line.encode()
            parsed = orjson.loads(raw)
        except (ValueError, UnicodeError) as exc:
            yield BadRow(number, str(exc))
            continue
        if not isinstance(parsed, dict):
            yield BadRow(number, "not a JSON object")
            continue
        row = JsonLine(parsed)
        row.raw = raw.rstrip(b"\r\n")
        yield row


def leaf_from_line(row: JsonLine, stored: str) -> bytes | None:
    """The leaf hash of a canonical line, found without re-encoding it; None if not.

    The line minus its ``"leaf_hash":"..."`` member is hashed and accepted only
    if that gives ``stored`` itself: then those bytes are the sealed canonical
    bytes (SHA-256 resists second preimages) and the line says nothing else. A
    line that is not canonical just takes the re-encoding path.
    """
    if not stored.isascii():
        return None
    member = b'"leaf_hash":"' + stored.encode() + b'"'
    raw = row.raw
    at = raw.find(member)
    if at < 0:
        return None
    end = at + len(member)
    if raw[end : end + 1] == b",":
        end += 1
    elif raw[at - 1 : at] == b",":
        at -= 1
    leaf = _sha256(b"\x00" + raw[:at] + raw[end:]).digest()
    return leaf if leaf.hex() == stored else None
