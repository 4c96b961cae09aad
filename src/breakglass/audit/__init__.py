"""Tamper evidence for the audit log.

Every audit row is a leaf of an RFC 6962 Merkle tree; the tree head is signed
as a C2SP checkpoint and may be published to write-once storage, so a
rewritten, truncated or reordered log is detected offline, at the row where
it goes wrong.

The event writer takes the next index when its transaction commits and
stores each row with ``leaf_hash = SHA-256(0x00 || canonical JSON of the row)``;
the checkpointer folds the committed leaves, in index order, into a
:class:`TreeState` (O(log n) per leaf) and signs
``sign_checkpoint(origin, state.size, state.root(), key, name)``.
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
    Verifier,
    Verifiers,
    key_hash,
    load_or_create_signing_key,
    load_signing_key,
    load_signing_key_from_env_text,
    parse_and_verify,
    parse_checkpoint,
    parse_vkey,
    public_key_text,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
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
from breakglass.audit.verify import (
    Problem,
    VerifyReport,
    anchored_within,
    verify_log,
    verify_proofs,
)

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
    "Verifier",
    "Verifiers",
    "VerifyReport",
    "anchored_within",
    "build_evidence_zip",
    "canonical_json",
    "consistency_proof",
    "event_leaf_bytes",
    "event_leaf_hash",
    "inclusion_proof",
    "key_hash",
    "leaf_hash",
    "load_or_create_signing_key",
    "load_signing_key",
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
    "verify_checkpoint",
    "verify_consistency",
    "verify_evidence_zip",
    "verify_inclusion",
    "verify_log",
    "verify_note",
    "verify_proofs",
]
