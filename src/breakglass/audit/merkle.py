"""The Merkle tree of the audit log, as RFC 6962 / RFC 9162 define it.

Leaves are ``SHA-256(0x00 || data)``, nodes ``SHA-256(0x01 || l || r)``, and
the tree of ``n`` leaves splits at the largest power of two below ``n``, as in
Certificate Transparency. Proofs are lists of 32-byte hashes, leaf side first.

* :class:`TreeState` (the compact range) keeps only the roots of the perfect
  subtrees on the right edge, at most ``log2(n) + 1`` hashes: appending is
  amortised one node hash, the root costs ``log2(n)``, and the event writer
  never re-reads the log. It serialises to JSON for the log-head row.
* Proof generation reads leaf hashes through a :data:`LeafSource`, either a
  ``Sequence[bytes]`` or a callable ``(start, end) -> Sequence[bytes]`` (a
  ranged ``SELECT leaf_hash ... ORDER BY index``). Without a cache a proof for
  a tree of ``n`` leaves hashes ``n - 1`` nodes and reads every leaf once,
  in blocks of :data:`READ_BLOCK` (about 0.5 s for a million leaves here);
  memory stays ``O(READ_BLOCK + log n)``. With a ``cache`` (any
  ``MutableMapping``) the roots of complete subtrees of at least
  ``READ_BLOCK`` leaves are kept: they never change in an append-only log,
  so later proofs read at most ``2 * READ_BLOCK`` leaves each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from breakglass.domain.errors import AuditError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
READ_BLOCK = 1 << 12

LeafSource = Sequence[bytes] | Callable[[int, int], Sequence[bytes]]
SubtreeCache = MutableMapping[tuple[int, int], bytes]

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


class TreeState:
    """The right edge of a Merkle tree: enough to append and to compute the root."""

    __slots__ = ("_frontier", "_size")
    __hash__ = None  # type: ignore[assignment]  # mutable: compared, never a dict key

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if size < 0 or len(frontier) != size.bit_count():
            raise AuditError(f"a tree of {size} leaves has {size.bit_count()} edge hashes")
        if any(len(h) != HASH_SIZE for h in frontier):
            raise AuditError("tree state holds a hash that is not 32 bytes")
        self._size = size
        self._frontier = list(frontier)

    @property
    def size(self) -> int:
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        """Roots of the perfect subtrees, largest (leftmost) first."""
        return tuple(self._frontier)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash (not the leaf data)."""
        if len(leaf) != HASH_SIZE:
            raise AuditError("a leaf hash is 32 bytes")
        frontier = self._frontier
        n = self._size
        while n & 1:
            leaf = _sha256(b"\x01" + frontier.pop() + leaf).digest()
            n >>= 1
        frontier.append(leaf)
        self._size += 1

    def root(self) -> bytes:
        if not self._frontier:
            return EMPTY_ROOT
        acc = self._frontier[-1]
        for left in reversed(self._frontier[:-1]):
            acc = _sha256(b"\x01" + left + acc).digest()
        return acc

    def copy(self) -> TreeState:
        return TreeState(self._size, self._frontier)

    def to_json(self) -> dict[str, Any]:
        return {"size": self._size, "frontier": [h.hex() for h in self._frontier]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TreeState:
        try:
            size = data["size"]
            hashes = [bytes.fromhex(h) for h in data["frontier"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditError(f"unreadable tree state: {exc}") from exc
        if not isinstance(size, int) or isinstance(size, bool):
            raise AuditError("tree state size is not an integer")
        return cls(size, hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TreeState):
            return NotImplemented
        return self._size == other._size and self._frontier == other._frontier


CompactRange = TreeState


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaf hashes (RFC 9162 2.1.1); the empty tree is SHA-256 of nothing."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _Reader(leaf_hashes, len(leaf_hashes), None).range_root(0, len(leaf_hashes))


def _mth(level: list[bytes]) -> bytes:
    """Root of a list of hashes, pairing level by level and promoting an odd last node.

    Promoting the odd node gives exactly RFC 6962's split at the largest power of two.
    """
    while len(level) > 1:
        paired = [
            _sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


class _Reader:
    """Subtree roots over a leaf source, read in blocks, with an optional cache."""

    def __init__(self, leaves: LeafSource, size: int, cache: SubtreeCache | None) -> None:
        if isinstance(leaves, Sequence):
            if len(leaves) < size:
                raise AuditError(f"tree of size {size} but only {len(leaves)} leaves")
            seq = leaves
            self._read: Callable[[int, int], Sequence[bytes]] = lambda a, b: seq[a:b]
        else:
            self._read = leaves
        self._cache = cache

    def _leaves(self, start: int, end: int) -> list[bytes]:
        got = list(self._read(start, end))
        if len(got) != end - start or any(len(h) != HASH_SIZE for h in got):
            raise AuditError(f"leaf source returned a bad range for [{start}, {end})")
        return got

    def perfect_root(self, start: int, size: int) -> bytes:
        """Root of the ``size`` (a power of two) leaves from ``start``."""
        if size <= READ_BLOCK:
            return _mth(self._leaves(start, start + size))
        key = (start, size)
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            return hit
        half = size >> 1
        value = node_hash(self.perfect_root(start, half), self.perfect_root(start + half, half))
        if self._cache is not None:
            self._cache[key] = value
        return value

    def range_root(self, start: int, end: int) -> bytes:
        """MTH of leaves ``[start, end)``: perfect pieces left to right, folded from the right."""
        pieces: list[bytes] = []
        pos, remaining = start, end - start
        while remaining:
            piece = 1 << (remaining.bit_length() - 1)
            if remaining <= READ_BLOCK:
                pieces.append(_mth(self._leaves(pos, end)))
                break
            pieces.append(self.perfect_root(pos, piece))
            pos += piece
            remaining -= piece
        acc = pieces[-1]
        for left in reversed(pieces[:-1]):
            acc = node_hash(left, acc)
        return acc


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(
    index: int, size: int, leaves: LeafSource, *, cache: SubtreeCache | None = None
) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1; ``ceil(log2(size))`` hashes."""
    if not 0 <= index < size:
        raise AuditError(f"index {index} is outside a tree of size {size}")
    reader = _Reader(leaves, size, cache)
    path: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(reader.range_root(start + k, end))
            end = start + k
        else:
            path.append(reader.range_root(start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(
    m: int, n: int, leaves: LeafSource, *, cache: SubtreeCache | None = None
) -> list[bytes]:
    """PROOF(m, D[0:n]) of RFC 9162 2.1.4.1; empty when ``m`` is 0 or ``n``."""
    if not 0 <= m <= n:
        raise AuditError(f"no consistency proof from size {m} to size {n}")
    if m in (0, n):
        return []
    reader = _Reader(leaves, n, cache)
    path: list[bytes] = []
    start, end, whole = 0, n, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            path.append(reader.range_root(start + k, end))
            end = start + k
        else:
            path.append(reader.range_root(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        path.append(reader.range_root(start, end))
    path.reverse()
    return path


def _hashes_ok(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``leaf`` sit at ``index`` of the tree with ``root``?"""
    if not 0 <= index < size or not _hashes_ok(leaf, root, *proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree of size ``n`` an extension of the one of size ``m``?"""
    if not 0 <= m <= n or not _hashes_ok(root_m, root_n, *proof):
        return False
    if m == n:
        return not proof and root_m == root_n
    if m == 0:
        return not proof and root_m == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root_m and sr == root_n
