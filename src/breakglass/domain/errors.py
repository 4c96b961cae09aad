"""The one exception tree of breakglass.

::

    BreakglassError
    ├── PolicyRefused        a rule of the catalog refused the action (CLI exit 3, HTTP 403)
    ├── NotFound             no such request, grant, incident, review (exit 4, HTTP 404)
    ├── InvalidInput         malformed input: bad duration, unknown field (exit 2, HTTP 422)
    ├── Conflict             the action does not fit the current state (exit 1, HTTP 409)
    ├── Unauthenticated      no, bad or expired identity token (exit 1, HTTP 401)
    ├── CatalogError         the catalog does not validate (exit 2)
    ├── TargetError          a target system failed; never carries a secret (exit 1, HTTP 502)
    └── AuditError           the audit log cannot be written or verified (exit 1, HTTP 503)

The API maps this tree to RFC 9457 problem+json in one handler; the CLI maps
it to one red line and an exit code. The domain never raises HTTP errors.
"""

from __future__ import annotations


class BreakglassError(Exception):
    """Base of every error breakglass raises on purpose."""

    rule: str = "error"

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if rule is not None:
            self.rule = rule

    def __str__(self) -> str:
        return self.message


class PolicyRefused(BreakglassError):
    """A catalog rule refused the action. ``rule`` names it."""

    rule = "policy"


class NotFound(BreakglassError):
    rule = "not_found"


class InvalidInput(BreakglassError):
    rule = "invalid_input"


class Conflict(BreakglassError):
    rule = "conflict"


class Unauthenticated(BreakglassError):
    rule = "identity.unauthenticated"


class CatalogError(BreakglassError):
    """The catalog does not validate; ``errors`` holds one line per problem."""

    rule = "catalog"

    def __init__(self, source: str, errors: list[str], rules: list[str] | None = None) -> None:
        self.errors = errors
        self.rules = rules or []
        """The rule ID of each error line, where the check names one (``zone.c.approvals``)."""
        tagged = [f"{e} [{r}]" for e, r in zip(errors, self.rules, strict=True)] if rules \
            else errors
        super().__init__(f"{source}: invalid catalog\n" + "\n".join(f"  {e}" for e in tagged))


class TargetError(BreakglassError):
    rule = "target"


class AuditError(BreakglassError):
    rule = "audit"
