"""Crash points for resilience drills: kill the process at a named step.

Armed only when ``BREAKGLASS_CRASH_AT=<point>:<n>`` is set for a broker process
(read once by the settings): the *n*-th time the broker reaches ``<point>``
it sends itself ``SIGKILL``, exactly as a power cut or an OOM kill would.
Resilience tests use this to prove that every intent is finished or rolled
back after a restart. Points:

``activation.started``   the intent (``activating``) is committed, nothing minted yet
``activation.minted``    a credential exists on a target, the store does not know it yet
``activation.stored``    the grant is stored and active
``revocation.started``   the intent (``revoking``) is committed, nothing revoked yet
``revocation.revoked``   the target no longer has the credential, the store still says so
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "activation.started",
    "activation.minted",
    "activation.stored",
    "revocation.started",
    "revocation.revoked",
)

_armed: tuple[str, int] | None = None
_seen = 0


def arm(spec: str | None) -> None:
    """``point:n`` arms one crash point; ``None`` disarms."""
    global _armed, _seen  # noqa: PLW0603 - one process-wide switch, set once at bootstrap
    _seen = 0
    if not spec:
        _armed = None
        return
    point, _, count = spec.partition(":")
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r} (known: {', '.join(POINTS)})")
    _armed = (point, int(count or "1"))


def reached(point: str) -> None:
    global _seen  # noqa: PLW0603
    if _armed is None or _armed[0] != point:
        return
    _seen += 1
    if _seen >= _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
