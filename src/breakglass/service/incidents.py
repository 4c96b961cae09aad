"""The incident system, behind one small port.

``IncidentDirectory.lookup(id)`` says whether an incident exists and is open.
The HTTP adapter asks ``GET <incident.verify_url>/<id>`` (the ID URL-quoted,
``incident.verify_timeout``, default 2 s) and expects::

    200  {"status": "open", "severity": "SEV2", ...}   # any extra fields ignored

``status`` is compared, case-insensitively, with ``incident.open_statuses``
(default ``["open"]``): a listed word is open, any other word is closed.
``severity`` is optional (runbooks limited to severities need it). A 404 means
the incident does not exist. Anything else (a timeout, a refused connection,
another status code, a body that is not such an object) means the incident
system is unavailable, and the request is refused with that reason unless the
catalog allows zone A to fail open.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from breakglass.domain.incidents import (
    IncidentLookup,
    IncidentStatus,
    check_incident,
    check_runbook_severity,
)
from breakglass.domain.model import Policy, Runbook, Zone
from breakglass.domain.policy import Denied


class IncidentDirectory(Protocol):
    def lookup(self, incident: str) -> IncidentLookup: ...


class HttpIncidentDirectory:
    """An incident system reached over HTTP (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        *,
        open_statuses: Iterable[str] = ("open",),
        timeout: float = 2.0,
        client: httpx.Client | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._open = frozenset(s.lower() for s in open_statuses)
        self._timeout = timeout
        self._client = client or httpx.Client(follow_redirects=False)

    def lookup(self, incident: str) -> IncidentLookup:
        url = f"{self._base}/{quote(incident, safe='')}"
        try:
            response = self._client.get(url, timeout=self._timeout,
                                        headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            return IncidentLookup(incident, IncidentStatus.UNAVAILABLE,
                                  f"{type(exc).__name__} from {self._base}")
        if response.status_code == 404:
            return IncidentLookup(incident, IncidentStatus.UNKNOWN)
        if response.status_code != 200:
            return IncidentLookup(incident, IncidentStatus.UNAVAILABLE,
                                  f"HTTP {response.status_code} from {self._base}")
        try:
            data = response.json()
        except ValueError:
            data = None
        status = data.get("status") if isinstance(data, dict) else None
        if not isinstance(status, str) or not status:
            return IncidentLookup(incident, IncidentStatus.UNAVAILABLE,
                                  'the answer has no "status" field')
        severity = data.get("severity") if isinstance(data, dict) else None
        state = IncidentStatus.OPEN if status.lower() in self._open else IncidentStatus.CLOSED
        return IncidentLookup(incident, state, status,
                              str(severity) if severity is not None else None)

    def close(self) -> None:
        self._client.close()


class IncidentGate:
    """Asks the directory (when one is configured) and applies the domain rule."""

    def __init__(self, policy: Policy, directory: IncidentDirectory | None) -> None:
        self._policy = policy
        self.directory = directory

    def check(self, incident: str, zone: Zone) -> tuple[Denied | None, IncidentLookup | None]:
        """``(refusal or None, what the incident system said or None when not asked)``."""
        if self.directory is None:
            return None, None
        lookup = self.directory.lookup(incident)
        decision = check_incident(self._policy, lookup, zone)
        return (decision if isinstance(decision, Denied) else None), lookup

    def admit(
        self, incident: str, zone: Zone, runbook: Runbook | None
    ) -> tuple[Denied | None, dict[str, Any]]:
        """A new request: the incident is open, and fits its runbook's severities."""
        denied, lookup = self.check(incident, zone)
        if denied is None and runbook is not None:
            severity = check_runbook_severity(runbook, lookup)
            denied = severity if isinstance(severity, Denied) else None
        return denied, lookup_payload(lookup)


def lookup_payload(lookup: IncidentLookup | None) -> dict[str, Any]:
    """What an accepted request's event says about the incident check."""
    if lookup is None:
        return {}
    found: dict[str, Any] = {"incident_status": lookup.status.value}
    if lookup.status is IncidentStatus.UNAVAILABLE:
        found["incident_check"] = f"fail-open (zone A): {lookup.detail}"
    if lookup.severity is not None:
        found["incident_severity"] = lookup.severity
    return found
