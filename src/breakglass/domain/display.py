"""Text that people supplied, made safe to show on a terminal or a page.

Reasons, comments, justifications and names reach other people's screens. Any
character that could move the cursor, start an escape sequence, reorder a line
(bidi overrides), hide itself or break a line is shown as a Python-style
escape (``\\x1b``, ``\\u202e``, ``\\n``), so what a viewer sees is exactly the
text that was stored, on one line. Ordinary letters of every script stay as
they are.
"""

from __future__ import annotations

import unicodedata

_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def visible(text: str) -> str:
    """``text`` with control, format, unassigned and line-separator characters escaped."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch
        for ch in text
    )
