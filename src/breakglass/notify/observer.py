"""The event observer that writes notifications and alerts into the outbox.

It runs inside the transaction of each audit event it wants (see
:func:`breakglass.storage.events.observe` and ``wanting``), so the outbox row
commits or rolls back with the event. It wakes the delivery worker only after
the commit. A transaction with no such event is not held for it.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy.exc import SQLAlchemyError

from breakglass.catalog.loader import LoadedCatalog
from breakglass.notify import outbox
from breakglass.notify.alerts import AlertRules
from breakglass.notify.config import NotifySettings
from breakglass.notify.notices import approver_notices, review_notice, wanted
from breakglass.notify.outbox import Message
from breakglass.storage.events import Appended, EventObserver

log = structlog.get_logger("breakglass.notify")


class NotifyObserver:
    def __init__(self, settings: NotifySettings, loaded: LoadedCatalog,
                 wake: Callable[[], None]) -> None:
        self._settings = settings
        self._policy = loaded.policy
        self._catalog = loaded.catalog
        self._rules = AlertRules(settings.rules)
        self._wake = wake

    def wants(self, a: Appended) -> bool:
        """The events this observer acts on: an alert rule may fire, or somebody is told."""
        return self._rules.wants(a) or (
            self._settings.notify_approvers and bool(self._settings.sinks) and wanted(a.event))

    def __call__(self, a: Appended) -> None:
        messages = self._rules.evaluate(a)
        if self._settings.notify_approvers and self._settings.sinks:
            messages = approver_notices(a, self._policy, self._catalog) + \
                review_notice(a) + messages
        written = 0
        for message in messages:
            if message.kind == "alert":
                a.after_commit(_logged(message))
            written += outbox.enqueue(a.connection, message, self._settings.sinks, a.event.ts,
                                      self._settings.organization)
        if written:
            a.after_commit(self._wake)


def _logged(message: Message) -> Callable[[], None]:
    def emit() -> None:
        log.warning("alert", rule=message.data.get("alert"), summary=message.summary)

    return emit


def guarded(name: str, observer: EventObserver) -> EventObserver:
    """Keep a bug in an observer off the request path; database errors still fail it.

    A failed statement leaves the transaction unusable (PostgreSQL aborts it),
    so those propagate and the whole change rolls back, event included.
    """

    def run(a: Appended) -> None:
        try:
            observer(a)
        except SQLAlchemyError:
            raise
        except Exception:
            log.exception("event observer failed", observer=name, action=a.event.action,
                          index=a.event.index)

    return run
