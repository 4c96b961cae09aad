"""A small, real incident system for tests: ``GET /incidents/<id>`` over HTTP.

It answers the shape the broker documents: ``200 {"status": ..., "severity": ...}``
for a known incident, ``404`` for an unknown one, ``503`` while ``down``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


class IncidentService:
    def __init__(self) -> None:
        self.incidents: dict[str, dict[str, Any]] = {}
        self.down = False
        self.asked: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                prefix = "/incidents/"
                incident = unquote(self.path[len(prefix):]) if self.path.startswith(
                    prefix) else ""
                service.asked.append(incident)
                found = service.incidents.get(incident)
                if service.down:
                    self._answer(503, {"error": "maintenance"})
                elif found is None:
                    self._answer(404, {"error": f"no incident {incident}"})
                else:
                    self._answer(200, {"id": incident, **found})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/incidents"

    def open(self, incident: str, severity: str = "SEV2") -> None:
        self.incidents[incident] = {"status": "open", "severity": severity}

    def close(self, incident: str) -> None:
        self.incidents[incident] = {"status": "resolved"}

    def __enter__(self) -> IncidentService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
