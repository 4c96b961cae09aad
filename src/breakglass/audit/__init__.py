"""Tamper evidence for the audit log.

Every audit row is a leaf of an RFC 6962 Merkle tree and a link of a hash
chain; the tree head is signed as a C2SP checkpoint and may be published to
write-once storage, so a rewritten, truncated or reordered log is detected
offline, at the row where it goes wrong.

The event writer keeps a :class:`TreeState` in its log-head row and, in the
transaction that stores an event::

    row = seal_event(event, prev_leaf_hash)        # adds prev_hash and leaf_hash
    state.append(bytes.fromhex(row["leaf_hash"]))  # O(log n), no re-read
    # store row and state.to_json()

and a checkpoint is ``sign_checkpoint(origin, state.size, state.root(), key, name)``.
"""

from breakglass.audit.anchor import Anchor, LocalDirectoryAnchor, S3ObjectLockAnchor
from breakglass.audit.canonical import (
    BadRow,
    JsonLine,
    canonical_json,
    event_leaf_bytes,
    event_leaf_hash,
    read_jsonl,
    seal_event,
)
from breakglass.audit.checkpoint import (
    Checkpoint,
    CheckpointPolicy,
    key_hash,
    load_or_create_signing_key,
    load_signing_key_from_env_text,
    parse_and_verify,
    parse_checkpoint,
    parse_vkey,
    public_key_text,
    sign_checkpoint,
    sign_note,
    verify_note,
)
from breakglass.audit.evidence import EvidenceSummary, build_evidence_zip, verify_evidence_zip
from breakglass.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    LeafSource,
    SubtreeCache,
    TreeState,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from breakglass.audit.verify import Problem, VerifyReport, verify_log, verify_proofs

__all__ = [
    "EMPTY_ROOT",
    "Anchor",
    "BadRow",
    "Checkpoint",
    "CheckpointPolicy",
    "CompactRange",
    "EvidenceSummary",
    "JsonLine",
    "LeafSource",
    "LocalDirectoryAnchor",
    "Problem",
    "S3ObjectLockAnchor",
    "SubtreeCache",
    "TreeState",
    "VerifyReport",
    "build_evidence_zip",
    "canonical_json",
    "consistency_proof",
    "event_leaf_bytes",
    "event_leaf_hash",
    "inclusion_proof",
    "key_hash",
    "leaf_hash",
    "load_or_create_signing_key",
    "load_signing_key_from_env_text",
    "node_hash",
    "parse_and_verify",
    "parse_checkpoint",
    "parse_vkey",
    "public_key_text",
    "read_jsonl",
    "root",
    "seal_event",
    "sign_checkpoint",
    "sign_note",
    "verify_consistency",
    "verify_evidence_zip",
    "verify_inclusion",
    "verify_log",
    "verify_note",
    "verify_proofs",
]
