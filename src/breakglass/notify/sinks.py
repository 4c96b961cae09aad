"""Sending one outbox row to one sink over HTTP.

* ``webhook``: the message as JSON. When the sink has a key, the header
  ``X-Breakglass-Signature: sha256=<hex>`` carries HMAC-SHA256 of the exact
  body bytes, so a receiver can check that the broker sent it unchanged.
  ``X-Breakglass-Delivery`` is stable across retries: receivers deduplicate on it.
* ``slack``: a Slack incoming-webhook body (``text`` plus ``blocks``).

Any answer other than 2xx, and any transport error, is a :class:`DeliveryError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from breakglass.notify.config import Sink
from breakglass.notify.outbox import OutboxRow

SIGNATURE_HEADER = "X-Breakglass-Signature"


class DeliveryError(Exception):
    """A sink did not take the message; the row is retried later."""


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    """The check a receiver makes (constant time)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def webhook_body(row: OutboxRow) -> bytes:
    document = {"delivery_id": row.id, **row.payload}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(row: OutboxRow) -> bytes:
    payload = row.payload
    icon = ":rotating_light:" if row.kind == "alert" else ":key:"
    summary = _slack_escape(str(payload.get("summary", "")))
    facts = [
        f"*{label}:* {_slack_escape(str(payload[key]))}"
        for key, label in (("incident", "Incident"), ("request_id", "Request"),
                           ("grant_id", "Grant"), ("principal", "Principal"),
                           ("zone", "Zone"), ("environment", "Environment"))
        if payload.get(key)
    ]
    recipients = payload.get("recipients") or []
    if recipients:
        facts.append("*For:* " + _slack_escape(", ".join(str(r) for r in recipients)))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {summary}"}},
    ]
    if facts:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": _slack_escape(
            f"breakglass {row.kind} {row.topic} · {payload.get('organization', '')}")}]})
    document = {"text": f"{icon} {summary}", "blocks": blocks}
    return json.dumps(document, separators=(",", ":")).encode()


class Transport:
    """The one HTTP client the delivery worker sends through."""

    def __init__(self, timeout: float, client: httpx.Client | None = None) -> None:
        self._http = client or httpx.Client(timeout=timeout, follow_redirects=False)

    def send(self, sink: Sink, row: OutboxRow) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "breakglass"}
        if sink.type == "slack":
            body = slack_body(row)
        else:
            body = webhook_body(row)
            headers.update({
                "X-Breakglass-Delivery": str(row.id),
                "X-Breakglass-Topic": row.topic,
                "X-Breakglass-Attempt": str(row.attempts),
            })
            if sink.secret is not None:
                headers[SIGNATURE_HEADER] = sign(sink.secret, body)
        try:
            response = self._http.post(sink.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{sink.name}: {type(exc).__name__}: {exc}"[:500]) from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"{sink.name}: HTTP {response.status_code}")

    def close(self) -> None:
        self._http.close()
