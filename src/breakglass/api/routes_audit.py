"""Audit API: signed checkpoints, proofs, entries, verification and evidence."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from breakglass.api.deps import ContainerDep, CurrentPrincipal, IncidentId

router = APIRouter(prefix="/v1")
MAX_PAGE = 1000
MAX_INDEX = 2**53
"""Log positions beyond this are refused as input (422) before they reach SQL."""


@router.get("/audit/checkpoint", response_class=PlainTextResponse)
def checkpoint(c: ContainerDep) -> str:
    """The newest signed tree head (C2SP checkpoint). Public: it reveals only hashes."""
    return c.audit.latest()


@router.get("/audit/checkpoints")
def all_checkpoints(c: ContainerDep) -> list[str]:
    """Every anchored checkpoint, oldest first."""
    c.audit.checkpoint()
    return sorted(c.audit.checkpoints(), key=lambda text: int(text.splitlines()[1]))


@router.get("/audit/key", response_class=PlainTextResponse)
def verifier_key(c: ContainerDep) -> str:
    """The checkpoint verifier keys (signed-note vkey format), one a line: the signing
    key's first, then the keys it replaced."""
    return c.audit.verifier_keys


@router.get("/audit/proof/inclusion")
def inclusion(c: ContainerDep, index: Annotated[int, Query(ge=0, le=MAX_INDEX)],
              size: Annotated[int, Query(ge=1, le=MAX_INDEX)]) -> dict[str, Any]:
    return c.audit.inclusion(index, size)


@router.get("/audit/proof/consistency")
def consistency(c: ContainerDep,
                first: Annotated[int, Query(alias="from", ge=0, le=MAX_INDEX)],
                second: Annotated[int, Query(alias="to", ge=1, le=MAX_INDEX)]) -> dict[str, Any]:
    return c.audit.consistency(first, second)


@router.get("/audit/entries")
def entries(who: CurrentPrincipal, c: ContainerDep,
            start: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0,
            end: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None) -> list[dict[str, Any]]:
    del who
    stop = start + MAX_PAGE if end is None else min(end, start + MAX_PAGE)
    return list(c.audit.entries(start, stop))


@router.get("/audit/verify")
def verify(who: CurrentPrincipal, c: ContainerDep) -> dict[str, Any]:
    del who
    report = c.audit.verify()
    return {"ok": report.ok, "size": report.size, "root": report.root_hex,
            "anchored_size": report.anchored_size, "notes": report.notes,
            "problems": [{"index": p.index, "kind": p.kind, "detail": p.detail}
                         for p in report.problems]}


@router.get("/incidents/{incident}/evidence")
def evidence(incident: IncidentId, who: CurrentPrincipal, c: ContainerDep) -> Response:
    """A zip an auditor verifies offline with `breakglass audit verify --evidence`."""
    del who
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "evidence.zip"
        c.audit.evidence(incident, out, serving_catalog={
            "sha256": c.loaded.policy.version, "file": Path(c.loaded.source).name,
            "organization": c.loaded.catalog.organization})
        data = out.read_bytes()
    # the header carries only a safe ASCII form of the ID: an incident is the caller's text
    name = re.sub(r"[^A-Za-z0-9._-]", "_", incident)
    return Response(data, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="evidence-{name}.zip"'})
