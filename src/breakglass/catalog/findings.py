"""What catalog checks report: a :class:`Finding` per problem, and where it is in the file.

A finding names a stable rule ID (``zone.c.approvals``), a severity (``error``
blocks ``serve``; ``warning`` is printed and logged), the catalog path of the
offending node (``("zones", "C", "approvals")``), a message and a fix hint.
:func:`node_positions` keeps the YAML line and column of every node so ``lint``
can point at it (text ``file:line:col`` and SARIF regions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import yaml

Severity = Literal["error", "warning"]
Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    path: Path
    message: str
    hint: str = ""
    mark: tuple[int, int] | None = None
    """(line, column) known without a path, e.g. where the YAML parser stopped."""
    node: Path | None = None
    """A node more precise than ``path`` to point at (a list item); default ``path``."""

    @property
    def where(self) -> str:
        """The path as the catalog's error lines have always spelled it: ``roles.x.grant``."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text or "(top)"

    def line(self) -> str:
        """One line for :class:`CatalogError`: ``path: message`` (the rule goes alongside)."""
        return f"{self.where}: {self.message}" if self.path else self.message


def errors_of(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def warnings_of(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "warning"]


Positions = dict[Path, tuple[int, int]]


def node_positions(text: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Positions:
    """1-based (line, column) of every mapping key and sequence item, by catalog path.

    A mapping entry points at its key (where a reader looks for ``approvals:``); the
    empty path points at the document start. Text that does not parse gives ``{}``."""
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError:
        return {}
    found: Positions = {}
    if root is not None:
        found[()] = (root.start_mark.line + 1, root.start_mark.column + 1)
        _walk(root, (), found)
    return found


def _walk(node: yaml.Node, path: Path, found: Positions) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            found.setdefault(child, (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
            _walk(value_node, child, found)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            found.setdefault(child, (item.start_mark.line + 1, item.start_mark.column + 1))
            _walk(item, child, found)


def locate(positions: Positions, finding: Finding) -> tuple[int, int]:
    """Where a finding points: its parser mark, else its node, else its path."""
    if finding.mark is not None:
        return finding.mark
    return position_of(positions, finding.node if finding.node is not None else finding.path)


def position_of(positions: Positions, path: Path) -> tuple[int, int]:
    """The nearest recorded node: the path itself, else its closest parent, else line 1."""
    for end in range(len(path), -1, -1):
        if (hit := positions.get(tuple(path[:end]))) is not None:
            return hit
    return (1, 1)


def path_of(dotted: str) -> Path:
    """The path back from a ``roles.x.grant`` / ``alerts.sinks[0].url`` spelling."""
    parts: list[str | int] = []
    for piece in dotted.split("."):
        name, _, rest = piece.partition("[")
        if name:
            parts.append(name)
        parts.extend(int(index) if index.isdigit() else index
                     for index in filter(None, rest.replace("]", "").split("[")))
    return tuple(parts)
