"""Refusals of callers who could not be authenticated, and of input the API could not
accept, recorded without flooding the log.

Anyone who can reach the broker can present a bad token, so one event per
refusal would let an anonymous caller grow the audit log (and every export,
proof and checkpoint after it) as fast as it can send requests. Each refusal
is still accounted for, in one of two ways:

* recorded one by one as ``identity:token:refused`` (rule, reason, source
  address), up to ``per_source`` a window from one address and ``overall``
  a window from all addresses together;
* beyond that, counted: when the window ends, one ``identity:refusals:counted``
  event per refusing rule says how many refusals it counted, from when to
  when, and from which addresses (the busiest ``top_sources`` by name, the
  rest as a number). The first window of a flood flags an alert.

Input refusals (a body that fails the schema, a bad duration: HTTP 422) go
through the same budget as ``api:input:refused`` events naming the caller, the
method and the path; the request's body never reaches them. Tokens never reach
these events: only the rule, the reason the verifier gave and the client's
address. The budget is per broker process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from breakglass.domain.events import SOURCE, EventTag, caller_address, serving
from breakglass.service.ports import Clock
from breakglass.storage.uow import UnitOfWorkFactory

UNKNOWN_SOURCE = "unknown"
OTHER_SOURCES = "other"  # addresses beyond the ones a window keeps apart


@dataclass(frozen=True, slots=True)
class RefusalBudget:
    """How many unauthenticated refusals a broker records one by one in each window."""

    per_source: int = 60
    overall: int = 600
    window: timedelta = timedelta(minutes=1)
    top_sources: int = 20  # addresses a summary names
    max_sources: int = 10_000  # addresses a window keeps apart (memory bound)


@dataclass(slots=True)
class _Window:
    start: datetime
    recorded: Counter[str] = field(default_factory=Counter)  # by source
    recorded_total: int = 0
    counted: dict[str, Counter[str]] = field(default_factory=dict)  # rule -> source -> n
    first: datetime | None = None
    last: datetime | None = None

    def count(self, rule: str, source: str, at: datetime, max_sources: int) -> None:
        by_source = self.counted.setdefault(rule, Counter())
        if source not in by_source and len(by_source) >= max_sources:
            source = OTHER_SOURCES
        by_source[source] += 1
        self.first = self.first or at
        self.last = at

    def merge(self, older: _Window) -> None:
        """Take back counts whose summary could not be written."""
        for rule, by_source in older.counted.items():
            self.counted.setdefault(rule, Counter()).update(by_source)
        if older.first is not None:
            self.first = min(older.first, self.first or older.first)
            self.last = max(older.last or older.first, self.last or older.first)


class RefusalRecorder:
    """Decides, for each refusal of an unauthenticated caller, to record it or count it."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock,
                 budget: RefusalBudget | None = None) -> None:
        self._uow = uow
        self._clock = clock
        self.budget = budget or RefusalBudget()
        self._lock = threading.Lock()
        self._window = _Window(start=clock.now())
        self._flooding = False  # the last window ended with counted refusals

    def refused(self, rule: str, reason: str, source: str | None = None, *,
                actor: str = "anonymous", action: EventTag = EventTag.AUTH_REFUSED,
                payload: Mapping[str, Any] | None = None) -> bool:
        """Account for one refusal from ``source`` (by default the address of the call being
        served); True if it was recorded as its own event.

        ``actor``, ``action`` and ``payload`` describe refusals of authenticated callers
        too (input the API refused, ``api:input:refused``): they share the budget, so
        no caller, signed in or not, can grow the log faster than it allows."""
        now = self._clock.now()
        self.flush()
        where = source or caller_address.get() or UNKNOWN_SOURCE
        b = self.budget
        with self._lock:
            w = self._window
            record = (w.recorded_total < b.overall and w.recorded[where] < b.per_source
                      and (where in w.recorded or len(w.recorded) < b.max_sources))
            if record:
                w.recorded[where] += 1
                w.recorded_total += 1
            else:
                w.count(rule, where, now, b.max_sources)
        if record:
            with self._uow() as uow:
                uow.events.append(ts=now, actor=actor, action=action,
                                  outcome="denied", rule=rule, reason=reason,
                                  payload={**(payload or {}), SOURCE: where})
        return record

    def flush(self, *, force: bool = False) -> int:
        """Write the summaries of a window that has ended (any window, with ``force``).

        Returns how many summary events were written. If they cannot be
        written, the counts go back into the current window and the error is
        raised: nothing counted is lost.
        """
        now = self._clock.now()
        with self._lock:
            ended = self._window
            if not force and now < ended.start + self.budget.window:
                return 0
            self._window = _Window(start=now)
            alert, self._flooding = not self._flooding and bool(ended.counted), bool(ended.counted)
        if not ended.counted:
            return 0
        try:
            self._write(ended, now, alert)
        except Exception:
            with self._lock:
                self._window.merge(ended)
                self._flooding = False
            raise
        return len(ended.counted)

    def _write(self, ended: _Window, now: datetime, alert: bool) -> None:
        b = self.budget
        # a summary covers many callers: not the address of the call that happens to write it
        with serving(None), self._uow() as uow:
            for rule, by_source in sorted(ended.counted.items()):
                total = sum(by_source.values())
                named = dict(by_source.most_common(b.top_sources))
                payload: dict[str, Any] = {
                    "counted": total,
                    "from": (ended.first or ended.start).isoformat(),
                    "to": (ended.last or now).isoformat(),
                    "sources": named,
                    "other_sources": total - sum(named.values()),
                    "distinct_sources": len(by_source),
                    "budget": {"per_source": b.per_source, "overall": b.overall,
                               "window_seconds": int(b.window.total_seconds())},
                }
                if alert:
                    payload["alert"] = True
                    alert = False  # one alert for the flood, on its first summary
                uow.events.append(
                    ts=now, actor="anonymous", action=EventTag.AUTH_REFUSALS_COUNTED,
                    outcome="denied", rule=rule, payload=payload,
                    reason=(f"{total} more refusals under {rule} from {len(by_source)} "
                            "address(es) were counted, not recorded one by one: over the "
                            f"budget of {b.per_source} an address and {b.overall} in all "
                            f"per {int(b.window.total_seconds())} s"))
