"""Run the broker's HTTP server."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import uvicorn

from breakglass.api.app import create_app
from breakglass.bootstrap import bootstrap
from breakglass.settings import Settings


def run_server(
    catalog: Path,
    *,
    db_url: str | None,
    host: str,
    port: int,
    dev: bool,
    state_dir: Path | None = None,
    anchor_in_state_dir: bool | None = None,
) -> None:
    settings = Settings.from_env(catalog, db_url=db_url, dev=dev, state_dir=state_dir,
                                 anchor_in_state_dir=anchor_in_state_dir)
    container = bootstrap(settings)
    app = create_app(container)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def run_worker(catalog: Path, *, db_url: str) -> None:
    """The background loop alone, until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings = Settings.from_env(catalog, db_url=db_url)
    container = bootstrap(settings, serves_api=False)
    container.start_background()
    try:
        stop.wait()
    finally:
        container.stop_background()
