"""``breakglass lint``: check a catalog in CI, as text, JSON or SARIF 2.1.0.

Exit 0 when nothing is at error level (warnings are printed), 1 when something
is, 2 for bad usage, 4 when the file is missing. Every finding carries its rule
ID and the YAML line and column of the offending node.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from breakglass.catalog.findings import Finding, locate, node_positions
from breakglass.catalog.loader import analyse_catalog
from breakglass.catalog.rules import RULES
from breakglass.cli import render

FORMATS = ("text", "json", "sarif")
RULES_URI = "https://github.com/breakglass/breakglass/blob/main/docs/catalog.md"


def lint_catalog(path: Path, fmt: str) -> int:
    if fmt not in FORMATS:
        render.err.print(f"--format must be one of {', '.join(FORMATS)}")
        return 2
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        render.err.print(f"{path}: no such file")
        return 4
    except (OSError, UnicodeDecodeError) as exc:
        render.err.print(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        return 4
    findings = analyse_catalog(text, os.environ, require_env=False).findings
    positions = node_positions(text)
    located = [(f, locate(positions, f)) for f in findings]
    located.sort(key=lambda item: (item[1], item[0].rule))
    if fmt == "sarif":
        sys.stdout.write(json.dumps(sarif(path, located), indent=2) + "\n")
    elif fmt == "json":
        sys.stdout.write(json.dumps({"findings": [
            {"rule": f.rule, "severity": f.severity, "message": _message(f), "hint": f.hint,
             "file": str(path), "line": line, "column": column, "path": f.where}
            for f, (line, column) in located]}, indent=2) + "\n")
    else:
        for f, (line, column) in located:
            level = "" if f.severity == "error" else "warning: "
            hint = f" ({f.hint})" if f.hint else ""
            sys.stdout.write(f"{path}:{line}:{column}: {f.rule}: {level}{_message(f)}{hint}\n")
        if not any(f.severity == "error" for f in findings):
            sys.stdout.write(f"{path}: ok\n")
    return 1 if any(f.severity == "error" for f in findings) else 0


def _message(finding: Finding) -> str:
    return f"{finding.where}: {finding.message}" if finding.path else finding.message


def sarif(path: Path, located: list[tuple[Finding, tuple[int, int]]]) -> dict[str, Any]:
    """A SARIF 2.1.0 log: one ``rules[]`` entry per rule ID, a region per result."""
    ids = list(RULES)
    rules = [{
        "id": rule_id,
        "name": "".join(p.capitalize() for p in rule_id.replace("_", ".").split(".")),
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.summary},
        "help": {"text": f"{rule.summary} Fix: {rule.fix}",
                 "markdown": f"{rule.summary}\n\n**Fix:** {rule.fix}"},
        "helpUri": f"{RULES_URI}#{rule_id.replace('.', '')}",
        "defaultConfiguration": {"level": rule.level},
    } for rule_id, rule in RULES.items()]
    results = [{
        "ruleId": f.rule,
        "ruleIndex": ids.index(f.rule),
        "level": f.severity,
        "message": {"text": _message(f) + (f" (fix: {f.hint})" if f.hint else "")},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": path.as_posix()},
            "region": {"startLine": line, "startColumn": column},
        }}],
    } for f, (line, column) in located]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "breakglass-lint", "informationUri": RULES_URI,
                                "rules": rules}},
            "results": results,
        }],
    }
