"""Who a person is (a subject) and how their display name is compared.

A person is the pair (issuer, ``sub``) their identity provider vouches for;
:func:`subject_key` turns that pair into one stable string, the key every
same-person decision compares (requester and approver, duplicate approval,
credential pickup, cancel, extension). The display name (``preferred_username``)
is for people to read; it can change, and two people can share it.

Names are still compared where the catalog names people (the directory, shared
accounts, ``user:<name>`` selectors): :func:`normalise_name` makes ``Admin``,
``admin `` and the full-width ``admin`` one name (NFKC, case folding, invisible
format characters and outer whitespace dropped).

Rows stored before subjects were recorded carry a *legacy* key,
:func:`legacy_key` of the display name under :data:`LEGACY_ISSUER`, an issuer
no identity provider can have. A legacy key never grants anything to a real
subject (nobody can pick up or cancel a legacy request under a new token), but
it still refuses: a principal whose normalised name is the legacy name counts
as that person for self-approval and duplicate approval.
"""

from __future__ import annotations

import unicodedata

LEGACY_ISSUER = "urn:breakglass:legacy-name"
"""The issuer of subjects backfilled from display names (rows older than subjects)."""

_SEPARATOR = "#"


def normalise_name(name: str) -> str:
    """The comparable form of a person's name: NFKC, case-folded, outer whitespace dropped.

    NFKC is applied again after case folding (Unicode's compatibility caseless
    match), so every spelling that reads as the same name compares equal; invisible
    format characters (zero-width spaces, soft hyphens, direction marks) are dropped
    first, so ``ad\u200bmin`` is ``admin`` too.
    """
    visible = "".join(c for c in name if unicodedata.category(c) != "Cf")
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", visible).casefold())
    return folded.strip()


def subject_key(issuer: str, subject: str) -> str:
    """One string for the pair (issuer, sub): ``<issuer>#<sub>``, the issuer's ``%``/``#`` escaped.

    Escaping keeps the key injective: the first unescaped ``#`` ends the issuer.
    """
    escaped = issuer.replace("%", "%25").replace(_SEPARATOR, "%23")
    return f"{escaped}{_SEPARATOR}{subject}"


def legacy_key(name: str) -> str:
    """The subject key backfilled for a row that only knew a display name."""
    return subject_key(LEGACY_ISSUER, name)


def legacy_name(key: str) -> str | None:
    """The display name inside a legacy key, or ``None`` for a real subject."""
    prefix = subject_key(LEGACY_ISSUER, "")
    return key[len(prefix):] if key.startswith(prefix) else None


def same_subject(a: str, b: str) -> bool:
    """Are two subject keys one person? Legacy keys are one person when their names are."""
    if a == b:
        return True
    name_a, name_b = legacy_name(a), legacy_name(b)
    return name_a is not None and name_b is not None and (
        normalise_name(name_a) == normalise_name(name_b))


def may_be(key: str, name: str, stored: str) -> bool:
    """Might the principal (``key``, display ``name``) be the person recorded as ``stored``?

    For refusals only (self-approval, duplicate approval): besides the same
    subject, a legacy record counts as anyone whose normalised name is its name.
    """
    if same_subject(key, stored):
        return True
    old = legacy_name(stored)
    return old is not None and normalise_name(old) == normalise_name(name)


def duplicate_spellings(names: list[str]) -> list[tuple[str, str]]:
    """Pairs of different spellings of one normalised name, in the order they appear."""
    first: dict[str, str] = {}
    found: list[tuple[str, str]] = []
    for name in names:
        key = normalise_name(name)
        pair = (first.get(key, name), name)
        if pair[0] != name and pair not in found:
            found.append(pair)
        first.setdefault(key, name)
    return found
