"""The audit Merkle tree against RFC 6962's reference vectors and a naive model."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from breakglass.audit import merkle
from breakglass.audit.merkle import (
    EMPTY_ROOT,
    TreeState,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from breakglass.domain.errors import AuditError

pytestmark = pytest.mark.unit

# The Certificate Transparency reference leaves and tree heads (RFC 6962 test data).
CT_DATA = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (2, 8): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
CT_LEAVES = [leaf_hash(d) for d in CT_DATA]


def naive_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written as the recursion it states."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def leaves_of(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 4 leaves, so 64-leaf trees exercise the blocked and cached paths."""
    monkeypatch.setattr(merkle, "READ_BLOCK", 4)


def test_hashes_use_the_rfc_6962_domain_prefixes() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]


@pytest.mark.parametrize("size", range(9))
def test_roots_match_the_reference_tree_heads(size: int) -> None:
    assert root(CT_LEAVES[:size]).hex() == CT_ROOTS[size]
    state = TreeState()
    for leaf in CT_LEAVES[:size]:
        state.append(leaf)
    assert state.root().hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size"), sorted(CT_INCLUSION))
def test_inclusion_proofs_match_the_reference(index: int, size: int) -> None:
    proof = inclusion_proof(index, size, CT_LEAVES)
    assert [p.hex() for p in proof] == CT_INCLUSION[index, size]
    assert verify_inclusion(CT_LEAVES[index], index, size, proof, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("m", "n"), sorted(CT_CONSISTENCY))
def test_consistency_proofs_match_the_reference(m: int, n: int) -> None:
    proof = consistency_proof(m, n, CT_LEAVES)
    assert [p.hex() for p in proof] == CT_CONSISTENCY[m, n]
    roots = bytes.fromhex(CT_ROOTS[m]), bytes.fromhex(CT_ROOTS[n])
    assert verify_consistency(m, n, *roots, proof)


@pytest.mark.usefixtures("small_blocks")
def test_every_proof_of_every_tree_up_to_64_leaves() -> None:
    leaves = leaves_of(64)
    roots = [naive_root(leaves[:n]) for n in range(65)]
    cache: dict[tuple[int, int], bytes] = {}
    state = TreeState()
    for n in range(65):
        assert root(leaves[:n]) == roots[n]
        assert state.root() == roots[n]
        assert state.size == n
        assert len(state.frontier) == n.bit_count()
        for i in range(n):
            proof = inclusion_proof(i, n, leaves, cache=cache)
            assert len(proof) <= (n - 1).bit_length()
            assert verify_inclusion(leaves[i], i, n, proof, roots[n])
            assert not verify_inclusion(leaves[i], i, n, proof, roots[n - 1])
            assert not verify_inclusion(leaves[(i + 1) % n], i, n, proof, roots[n]) or n == 1
        for m in range(n + 1):
            proof = consistency_proof(m, n, lambda a, b: leaves[a:b])
            assert verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
            if 0 < m < n:
                assert not verify_consistency(m, n, roots[m - 1], roots[n], proof)
        if n < 64:
            state.append(leaves[n])
    assert cache, "complete subtrees of at least READ_BLOCK leaves are cached"


@pytest.mark.usefixtures("small_blocks")
def test_callable_source_and_cache_give_the_same_proofs() -> None:
    leaves = leaves_of(50)
    reads: list[tuple[int, int]] = []

    def source(start: int, end: int) -> list[bytes]:
        reads.append((start, end))
        return leaves[start:end]

    cache: dict[tuple[int, int], bytes] = {}
    for i in range(50):
        assert inclusion_proof(i, 50, source, cache=cache) == inclusion_proof(i, 50, leaves)
    assert all(end - start <= 4 for start, end in reads)


def test_a_short_or_wrong_leaf_source_is_refused() -> None:
    with pytest.raises(AuditError):
        inclusion_proof(0, 9, CT_LEAVES)
    with pytest.raises(AuditError):
        inclusion_proof(0, 4, lambda a, b: [b"short"] * (b - a))
    with pytest.raises(AuditError):
        inclusion_proof(8, 8, CT_LEAVES)
    with pytest.raises(AuditError):
        consistency_proof(5, 3, CT_LEAVES)


def test_verifiers_refuse_malformed_input_instead_of_raising() -> None:
    proof = inclusion_proof(5, 8, CT_LEAVES)
    root8 = bytes.fromhex(CT_ROOTS[8])
    assert not verify_inclusion(CT_LEAVES[5], 8, 8, proof, root8)
    assert not verify_inclusion(CT_LEAVES[5], -1, 8, proof, root8)
    assert not verify_inclusion(CT_LEAVES[5][:31], 5, 8, proof, root8)
    assert not verify_inclusion(CT_LEAVES[5], 5, 8, [*proof, b"\0" * 32], root8)
    assert not verify_inclusion(CT_LEAVES[5], 5, 8, proof[:-1], root8)
    assert not verify_inclusion(CT_LEAVES[5], 5, 8, [proof[0][:31], *proof[1:]], root8)
    cproof = consistency_proof(6, 8, CT_LEAVES)
    root6 = bytes.fromhex(CT_ROOTS[6])
    assert not verify_consistency(8, 6, root8, root6, cproof)
    assert not verify_consistency(6, 8, root6, root8, [])
    assert not verify_consistency(6, 8, root6, root8, [*cproof, b"\0" * 32])
    assert verify_consistency(4, 4, root6, root6, [])
    assert not verify_consistency(4, 4, root6, root8, [])
    assert verify_consistency(0, 8, EMPTY_ROOT, root8, [])
    assert not verify_consistency(0, 8, root6, root8, [])


def test_tree_state_round_trips_through_json() -> None:
    state = TreeState()
    for leaf in leaves_of(13):
        state.append(leaf)
    again = TreeState.from_json(state.to_json())
    assert again == state
    assert again.root() == state.root()
    again.append(leaf_hash(b"more"))
    assert again != state
    copy = state.copy()
    copy.append(leaf_hash(b"more"))
    assert copy == again
    assert state.size == 13


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"size": 3, "frontier": ["00" * 32]},
        {"size": 1, "frontier": ["00" * 31]},
        {"size": 1, "frontier": ["zz"]},
        {"size": "1", "frontier": ["00" * 32]},
        {"size": -1, "frontier": []},
    ],
)
def test_a_corrupt_tree_state_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(AuditError):
        TreeState.from_json(data)


def test_appending_something_that_is_not_a_leaf_hash_is_refused() -> None:
    with pytest.raises(AuditError):
        TreeState().append(b"raw data")


def test_a_million_leaf_proof_is_twenty_hashes_under_one_kib() -> None:
    size, index = 1_000_000, 765_432
    # Leaves derived from their index: the proof reads them through the callable.
    proof = inclusion_proof(
        index, size, lambda a, b: [leaf_hash(i.to_bytes(4, "big")) for i in range(a, b)]
    )
    assert len(proof) == 20
    assert sum(map(len, proof)) == 640


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_inclusion_property(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n)
    index = data.draw(st.integers(0, n - 1))
    head = root(leaves)
    proof = inclusion_proof(index, n, leaves)
    assert verify_inclusion(leaves[index], index, n, proof, head)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof]
        bad[k] = bytes(32)
        assert not verify_inclusion(leaves[index], index, n, bad, head)
    if n > 1:
        other = data.draw(st.integers(0, n - 1).filter(lambda j: j != index))
        assert not verify_inclusion(leaves[index], other, n, proof, head)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_consistency_property(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n)
    m = data.draw(st.integers(0, n))
    proof = consistency_proof(m, n, leaves)
    assert verify_consistency(m, n, root(leaves[:m]), root(leaves), proof)
    if 0 < m < n:
        forked = [*leaves[: m - 1], leaf_hash(b"forged"), *leaves[m:]]
        assert not verify_consistency(m, n, root(leaves[:m]), root(forked), proof)
        assert not verify_consistency(m, n, root(forked[:m]), root(leaves), proof)
