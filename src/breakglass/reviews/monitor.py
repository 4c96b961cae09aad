"""The overdue check: a thread that raises the alert of every review past its due time."""

from __future__ import annotations

import threading

import structlog

from breakglass.reviews.service import ReviewService

log = structlog.get_logger("breakglass.reviews")


class ReviewMonitor:
    def __init__(self, reviews: ReviewService, interval: float) -> None:
        self._reviews = reviews
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="breakglass-reviews",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raised = self._reviews.raise_overdue()
                if raised:
                    log.warning("reviews overdue", count=raised)
            except Exception:
                log.exception("overdue check crashed")
            self._stop.wait(self._interval)
