"""The event observer that writes notifications and alerts into the outbox.

It composes its messages from each audit event inside the event's
transaction, before the event has its index, so its reads do not hold the
log head; once the index is known it stamps it into the messages and writes
them, so the outbox rows commit or roll back with the event (see
:func:`breakglass.storage.events.composing`). It wakes the delivery worker
only after the commit. A transaction with nothing to tell is not held for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog
from sqlalchemy.exc import SQLAlchemyError

from breakglass.catalog.loader import LoadedCatalog
from breakglass.notify import outbox
from breakglass.notify.alerts import AlertRules
from breakglass.notify.config import NotifySettings
from breakglass.notify.notices import approver_notices, review_notice
from breakglass.notify.outbox import Message
from breakglass.storage.events import Appended, Step

log = structlog.get_logger("breakglass.notify")
T = TypeVar("T")


class NotifyObserver:
    def __init__(self, settings: NotifySettings, loaded: LoadedCatalog,
                 wake: Callable[[], None]) -> None:
        self._settings = settings
        self._policy = loaded.policy
        self._catalog = loaded.catalog
        self._rules = AlertRules(settings.rules)
        self._wake = wake

    def compose(self, a: Appended) -> Step | None:
        """The messages ``a.event`` causes, and the step that writes them once it has its index."""
        messages = self._rules.evaluate(a)
        if self._settings.notify_approvers and self._settings.sinks:
            messages = approver_notices(a, self._policy, self._catalog) + \
                review_notice(a) + messages
        if not messages:
            return None

        def write(indexed: Appended) -> None:
            written = 0
            for message in messages:
                stamped = message.at(indexed.event.index)
                if stamped.kind == "alert":
                    indexed.after_commit(_logged(stamped))
                written += outbox.enqueue(indexed.connection, stamped, self._settings.sinks,
                                          indexed.event.ts, self._settings.organization)
            if written:
                indexed.after_commit(self._wake)

        return guarded("notify", write)


def _logged(message: Message) -> Callable[[], None]:
    def emit() -> None:
        log.warning("alert", rule=message.data.get("alert"), summary=message.summary)

    return emit


def guarded(name: str, observer: Callable[[Appended], T]) -> Callable[[Appended], T | None]:
    """Keep a bug in an observer off the request path; database errors still fail it.

    A failed statement leaves the transaction unusable (PostgreSQL aborts it),
    so those propagate and the whole change rolls back, event included.
    """

    def run(a: Appended) -> T | None:
        try:
            return observer(a)
        except SQLAlchemyError:
            raise
        except Exception:
            log.exception("event observer failed", observer=name, action=a.event.action,
                          index=a.event.index)
            return None

    return run
