"""``breakglass lint``: check a catalog in CI, as text or SARIF 2.1.0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from breakglass.catalog.loader import load_catalog
from breakglass.cli import render
from breakglass.domain.errors import CatalogError


def lint_catalog(path: Path, fmt: str) -> int:
    if fmt not in ("text", "sarif"):
        render.err.print("--format must be text or sarif")
        return 2
    try:
        load_catalog(path, require_env=False)
        problems: list[str] = []
    except CatalogError as exc:
        problems = exc.errors
    if fmt == "sarif":
        sys.stdout.write(json.dumps(_sarif(path, problems), indent=2) + "\n")
    elif problems:
        for problem in problems:
            sys.stdout.write(f"{path}: {problem}\n")
    else:
        sys.stdout.write(f"{path}: ok\n")
    return 1 if problems else 0


def _sarif(path: Path, problems: list[str]) -> dict[str, object]:
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "breakglass-lint", "informationUri":
                                "https://breakglass.dev/docs/catalog",
                                "rules": [{"id": "catalog"}]}},
            "results": [{
                "ruleId": "catalog",
                "level": "error",
                "message": {"text": p},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": str(path)}}}],
            } for p in problems],
        }],
    }
