"""``breakglass login`` against the broker's OIDC provider: device flow, PKCE as fallback."""

from __future__ import annotations

import webbrowser
from typing import Any

import httpx

from breakglass.cli import render
from breakglass.cli.client import ApiClient
from breakglass.domain.errors import Unauthenticated
from breakglass.identity.device_flow import DeviceFlowClient


def oidc_login(client: ApiClient) -> dict[str, Any]:
    config = client.call("GET", "/v1/auth/config")
    if config.get("dev"):
        raise Unauthenticated("this broker runs with --dev: use `breakglass login --dev USER`",
                              rule="identity.login")
    issuer, client_id = config["issuer"], config["client_id"]
    with httpx.Client(timeout=10) as http:
        flow = DeviceFlowClient(issuer, client_id, http)
        try:
            authorization = flow.start()
        except Unauthenticated as exc:
            if exc.rule != "identity.login_unsupported":
                raise
            tokens = flow.authorization_code_pkce(webbrowser.open)
        else:
            render.err.print(f"Open {authorization.verification_uri_complete}")
            render.err.print(f"and confirm the code {authorization.user_code}")
            tokens = flow.poll(authorization)
    return {**tokens.to_json(), "issuer": issuer, "client_id": client_id}
