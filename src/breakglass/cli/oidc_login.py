"""``breakglass login`` against a real OIDC provider (device flow)."""

from __future__ import annotations

from typing import Any

from breakglass.cli.client import ApiClient
from breakglass.domain.errors import Unauthenticated


def oidc_login(client: ApiClient) -> dict[str, Any]:
    raise Unauthenticated("OIDC login is not configured on this broker; use --dev USER "
                          "against a --dev server", rule="identity.login")
