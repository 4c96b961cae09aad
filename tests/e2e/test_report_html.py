"""``breakglass report`` on a seeded history: JSON numbers by hand, HTML charts in Chromium."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import make_engine
from tests.fakes import FakeClock
from tests.ops_harness import BIN, ENV, catalog_text, make_harness, running_broker
from tests.ops_history import EXPECTED, comparable, seed_history

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A broker serving a history seeded two days ago by the service layer."""
    work = tmp_path_factory.mktemp("report")
    logs = work / "pglog"
    logs.mkdir()
    db = work / "broker.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    harness = make_harness(engine, FakeClock(start), logs)
    seed_history(harness)
    harness.ops.close()
    engine.dispose()
    catalog = work / "catalog.yaml"
    catalog.write_text(catalog_text(logs))
    env = {**os.environ, **ENV, "BREAKGLASS_STATE_DIR": str(work / "state"),
           "BREAKGLASS_ANCHOR_DIR": str(work / "anchor")}
    with running_broker(catalog, db, env, work / "server.log") as (url, _):
        yield url, work


def cli(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(home), "BREAKGLASS_SERVER": url,
           "COLUMNS": "200"}
    env.pop("BREAKGLASS_TOKEN", None)
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def vera(server: tuple[str, Path]) -> Path:
    url, work = server
    home = work / "home-vera"
    result = cli(url, home, "login", "--dev", "vera")
    assert result.returncode == 0, result.stderr
    return home


def test_report_json_matches_the_hand_computed_numbers(server, vera):
    url, _ = server
    result = cli(url, vera, "report", "--since", "7d", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert comparable(report) == EXPECTED
    assert report["organization"] == "test-org"


def test_report_html_renders_its_charts_in_chromium(server, vera):
    url, work = server
    page_file = work / "report.html"
    result = cli(url, vera, "report", "--since", "7d", "--format", "html", "--out",
                 str(page_file))
    assert result.returncode == 0, result.stderr
    html = page_file.read_text()
    assert html.count('<img class="chart"') == 4
    assert "<script" not in html  # charts are images drawn by matplotlib, nothing to run
    shot = work / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img.chart", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.alt])")
            tiles = page.inner_text("#summary")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(sizes) == 4
    assert all(complete and width > 200 for complete, width, _ in sizes), sizes
    assert "75%" in tiles  # sessions ended within their TTL
    assert "36.36%" in tiles  # policy violation rate
    assert shot.stat().st_size > 50_000
    print(f"\nscreenshot: {shot} ({shot.stat().st_size} bytes)")


def test_the_api_serves_the_same_report_and_prometheus_metrics(server):
    url, _ = server
    issued = httpx.post(url + "/v1/dev/token", json={"username": "vera"}).json()
    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    data = httpx.get(url + "/v1/metrics/report", params={"since": "7d"}, headers=headers,
                     timeout=60).json()
    assert comparable(data) == EXPECTED
    page = httpx.get(url + "/v1/metrics/report", params={"since": "7d", "format": "html"},
                     headers=headers, timeout=60)
    assert page.headers["content-type"].startswith("text/html")
    bad = httpx.get(url + "/v1/metrics/report", params={"since": "soon"}, headers=headers)
    assert (bad.status_code, bad.json()["rule"]) == (422, "input.since")
    assert httpx.get(url + "/v1/metrics/report").status_code == 401
    metrics = httpx.get(url + "/metrics").text
    assert 'breakglass_reviews{state="open"} 1.0' in metrics
    assert "breakglass_reviews_overdue 1.0" in metrics
    assert "# TYPE breakglass_activation_seconds histogram" in metrics


def test_reviews_through_the_cli(server, vera):
    url, work = server
    listed = cli(url, vera, "review", "list", "--mine", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = json.loads(listed.stdout)
    assert [r["state"] for r in mine] == ["closed", "closed"]
    wim = work / "home-wim"
    assert cli(url, wim, "login", "--dev", "wim").returncode == 0
    [overdue] = json.loads(cli(url, wim, "review", "list", "--state", "overdue",
                               "--json").stdout)
    shown = cli(url, wim, "review", "show", overdue["id"])
    assert shown.returncode == 0
    assert "overdue" in shown.stdout
    refused = cli(url, vera, "review", "complete", overdue["id"], "--findings", "x")
    assert refused.returncode == 3
    assert "assigned to wim" in refused.stderr
    bad = cli(url, wim, "review", "complete", overdue["id"], "--findings", "x", "--task", "nope")
    assert bad.returncode == 2
    done = cli(url, wim, "review", "complete", overdue["id"], "--findings",
               "late revocation: target outage", "--task", "ugo:page the DB team on outages",
               "--json")
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)["tasks"][0]["id"]
    added = cli(url, wim, "review", "add-task", overdue["id"], "--owner", "wim", "--title",
                "retry failed revocations faster", "--json")
    assert added.returncode == 0, added.stderr
    extra = json.loads(added.stdout)["id"]
    closed = cli(url, wim, "review", "close-task", task, "--note", "paging rule added",
                 "--json")
    assert json.loads(closed.stdout)["state"] == "tasks_open"
    closed = cli(url, wim, "review", "close-task", extra, "--json")
    assert json.loads(closed.stdout)["state"] == "closed"
    rollup = json.loads(cli(url, wim, "review", "rollup", "SEV-1002", "--json").stdout)
    assert (rollup["reviews"], rollup["closed"], rollup["complete"]) == (1, 1, True)
    missing = cli(url, wim, "review", "show", "rv-000000000000")
    assert missing.returncode == 4
