"""``GET /metrics`` on a production broker: only with the configured scrape token."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.oidc_fixtures import BIN, FIXTURES, running_broker
from tests.services import require

CATALOG = FIXTURES / "catalog_oidc.yaml"


def scrape(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(url + "/metrics", headers=headers, timeout=10)


def test_metrics_need_the_scrape_token_and_refusals_are_audited(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    env = {"BG_TEST_OIDC_ISSUER": require("BG_TEST_OIDC_ISSUER"),
           "TEST_TARGET_DSN": "postgresql://nobody@127.0.0.1:1/none",
           "BREAKGLASS_METRICS_TOKEN": token}
    with running_broker(CATALOG, tmp_path, env) as broker:
        allowed = scrape(broker.url, token)
        assert allowed.status_code == 200
        assert "# TYPE breakglass_requests_total counter" in allowed.text
        for presented in (None, token[:-1], token + "x", "Bearer"):
            refused = scrape(broker.url, presented)
            assert refused.status_code == 401, presented
            assert refused.json()["rule"] == "identity.metrics_token"
            assert "breakglass_" not in refused.text
        refusals = [e for e in broker.events("identity:token:refused")
                    if e[3] == "identity.metrics_token"]
        assert len(refusals) == 4
        log = broker.log.read_text()
    assert token not in log


def test_without_a_configured_token_a_production_broker_keeps_metrics_closed(
        tmp_path: Path) -> None:
    env = {"BG_TEST_OIDC_ISSUER": require("BG_TEST_OIDC_ISSUER"),
           "TEST_TARGET_DSN": "postgresql://nobody@127.0.0.1:1/none"}
    with running_broker(CATALOG, tmp_path, env) as broker:
        refused = scrape(broker.url, "anything-at-all-long-enough-to-pass")
        assert refused.status_code == 401
        assert "set BREAKGLASS_METRICS_TOKEN" in refused.json()["detail"]


@pytest.mark.parametrize("token", ["short", "has a space in it, long enough though"])
def test_a_weak_scrape_token_stops_the_broker_at_start(tmp_path: Path, token: str) -> None:
    env = {**os.environ, "BREAKGLASS_METRICS_TOKEN": token, "BREAKGLASS_STATE_DIR": str(tmp_path),
           "BREAKGLASS_ANCHOR_DIR": f"{tmp_path}-anchor",
           "BG_TEST_OIDC_ISSUER": require("BG_TEST_OIDC_ISSUER")}
    result = subprocess.run([str(BIN), "serve", "--catalog", str(CATALOG), "--dev",
                             "--db", f"sqlite:///{tmp_path / 'b.db'}", "--port", "1"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "settings.metrics_token" in result.stderr + result.stdout
    assert token not in result.stderr + result.stdout
