"""The web page in Chromium against a real ``serve --dev`` broker and PostgreSQL target."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def log_in(browser: Browser, url: str, user: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(url + "/ui/")
    expect(page).to_have_url(url + "/ui/login")
    page.select_option("#username", user)
    page.click("#login button[type=submit]")
    expect(page.locator("header .who")).to_have_text(user)
    return page


def request_row(page: Page, request_id: str, table: str) -> str:
    return page.inner_text(f"#{table} tr[data-request='{request_id}'] .state")


def test_request_approve_watch_and_revoke_in_the_browser(broker_server, browser, tmp_path):
    url = broker_server
    uma = log_in(browser, url, "uma")
    uma.check("input[name=roles][value=embeddings-requeue]")
    uma.fill("#incident", "SEV-5001")
    uma.select_option("#reason", "recovery")
    uma.fill("#justification", "jobs stuck <b>in</b> queue")
    uma.click("#request-form button[type=submit]")
    expect(uma.locator("#notice")).to_contain_text("pending")
    request_id = uma.inner_text("#notice b")
    assert re.fullmatch(r"r-[0-9a-f]{12}", request_id)
    assert request_row(uma, request_id, "mine") == "pending"

    vera = log_in(browser, url, "vera")
    vera.goto(url + "/ui/approvals")
    row = vera.locator(f"#pending tr[data-request='{request_id}']")
    expect(row).to_contain_text("uma")
    expect(row).to_contain_text("jobs stuck <b>in</b> queue")  # shown as text, not markup
    row.locator("button[value=approve]").click()
    expect(vera.locator("#notice")).to_contain_text(request_id)
    expect(vera.locator("#notice .state")).to_have_text("active")

    uma.goto(url + "/ui/grants")
    countdown = uma.locator(f"#live tr[data-request='{request_id}'] .countdown")
    expect(countdown).to_have_text(re.compile(r"^(1\d|[0-9])m \d\ds$"))
    first = countdown.inner_text()
    uma.wait_for_timeout(1500)
    assert countdown.inner_text() != first  # it counts down without a reload
    uma.screenshot(path=str(tmp_path / "grants.png"), full_page=True)
    uma.locator(f"#live tr[data-request='{request_id}'] button").click()
    expect(uma.locator("#notice .state")).to_have_text("revoked")
    uma.goto(url + "/ui/")
    assert request_row(uma, request_id, "mine") == "revoked"

    uma.goto(url + "/ui/timeline?incident=SEV-5001")
    events = uma.inner_text("#events")
    assert "vera" in events
    assert request_id in events

    uma.goto(url + "/ui/")
    uma.check("input[name=roles][value=embeddings-requeue]")
    uma.fill("#incident", "not-an-incident")
    with uma.expect_response(url + "/ui/requests") as refused:
        uma.click("#request-form button[type=submit]")
    assert refused.value.status == 403
    expect(uma.locator("#refused .rule")).to_have_text("incident.pattern")
    assert uma.input_value("#incident") == "not-an-incident"  # the form keeps its values
    shot = tmp_path / "refused.png"
    uma.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert (tmp_path / "grants.png").stat().st_size > 10_000


def test_reviews_and_metrics_pages(broker_server, browser):
    page = log_in(browser, broker_server, "vera")
    page.goto(broker_server + "/ui/reviews")
    expect(page.locator("#reviews")).to_be_visible()
    page.goto(broker_server + "/ui/metrics?since=7d")
    frame = page.frame_locator("#report")
    expect(frame.locator("#summary")).to_be_visible(timeout=60_000)
    page.goto(broker_server + "/ui/timeline?incident=SEV-0000")
    expect(page.locator("#refused .rule")).to_have_text("incident.not_found")


def form_token(page: httpx.Response) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text[:300]
    return found.group(1)


def test_forms_need_the_csrf_token_and_pages_need_a_session(broker_server):
    with httpx.Client(base_url=broker_server, follow_redirects=False) as http:
        assert http.get("/ui/grants").headers["location"] == "/ui/login"
        login = http.get("/ui/login")
        csrf = form_token(login)
        assert "HttpOnly" in login.headers["set-cookie"]
        assert "samesite=strict" in login.headers["set-cookie"].lower()
        refused = http.post("/ui/login", data={"username": "uma"})
        assert refused.status_code == 403
        assert "web.csrf" in refused.text
        assert "bg_session" not in http.cookies
        wrong = http.post("/ui/login", data={"username": "uma", "csrf": "x" * 43})
        assert wrong.status_code == 403
        ok = http.post("/ui/login", data={"username": "uma", "csrf": csrf})
        assert ok.status_code == 303
        assert "bg_session" in http.cookies
        form = {"roles": "embeddings-read", "incident": "SEV-5002", "reason": "recovery"}
        assert http.post("/ui/requests", data=form).status_code == 403
        http.cookies.set("bg_session", "not-a-token", domain="127.0.0.1", path="/ui")
        expired = http.get("/ui/grants")
        assert expired.status_code == 401
        assert "Traceback" not in expired.text


def test_a_csrf_pair_planted_from_another_session_is_refused(broker_server):
    """Double submit alone would accept any matching cookie and field: the token is bound
    to the session, so an attacker's own valid pair, or the old double-submit pair, fails."""
    form = {"roles": "embeddings-read", "incident": "SEV-5003", "reason": "recovery"}
    with httpx.Client(base_url=broker_server, follow_redirects=False) as attacker:
        token = form_token(attacker.get("/ui/login"))
        assert attacker.post("/ui/login", data={"username": "wim", "csrf": token}
                             ).status_code == 303
        attackers_token = form_token(attacker.get("/ui/"))
        attackers_browser = attacker.cookies["bg_csrf"]
    with httpx.Client(base_url=broker_server, follow_redirects=False) as victim:
        login_token = form_token(victim.get("/ui/login"))
        assert victim.post("/ui/login", data={"username": "uma", "csrf": login_token}
                           ).status_code == 303
        own = form_token(victim.get("/ui/"))
        assert own != attackers_token
        for planted in (attackers_token, login_token, victim.cookies["bg_csrf"], "x" * 64):
            refused = victim.post("/ui/requests", data={**form, "csrf": planted})
            assert refused.status_code == 403, planted
            assert "web.csrf" in refused.text
        victim.cookies.set("bg_csrf", attackers_browser, domain="127.0.0.1", path="/ui")
        assert victim.post("/ui/requests", data={**form, "csrf": attackers_token}
                           ).status_code == 403
        assert victim.post("/ui/requests", data={**form, "csrf": own}).status_code == 303


def test_a_pasted_access_token_logs_in(broker_server):
    issued = httpx.post(broker_server + "/v1/dev/token", json={"username": "wim"}).json()
    with httpx.Client(base_url=broker_server, follow_redirects=False) as http:
        csrf = form_token(http.get("/ui/login"))
        bad = http.post("/ui/login", data={"token": "garbage", "csrf": csrf})
        assert bad.status_code == 401
        assert "identity." in bad.text
        ok = http.post("/ui/login", data={"token": issued["access_token"], "csrf": csrf})
        assert ok.status_code == 303
        page = http.get("/ui/approvals")
        assert page.status_code == 200
        assert '<span class="who">wim</span>' in page.text
        assert "nonce-" in page.headers["content-security-policy"]


def _web_login(http: httpx.Client, user: str) -> None:
    token = form_token(http.get("/ui/login"))
    assert http.post("/ui/login", data={"username": user, "csrf": token}).status_code == 303


def test_what_a_requester_typed_reaches_the_approver_as_inert_text(broker_server):
    """Escape sequences, line breaks, bidi overrides and markup in a justification are
    shown escaped on the approver's page: they neither style, reorder nor forge rows."""
    typed = "\x1b[31mURGENT\x1b[0m\r\nfake row\u202egnp.exe [bold]x[/] <b>y</b>"
    with httpx.Client(base_url=broker_server, follow_redirects=False) as uma:
        _web_login(uma, "uma")
        form = {"roles": "embeddings-requeue", "incident": "SEV-5004", "reason": "recovery",
                "justification": typed, "csrf": form_token(uma.get("/ui/"))}
        assert uma.post("/ui/requests", data=form).status_code == 303
    with httpx.Client(base_url=broker_server, follow_redirects=False) as vera:
        _web_login(vera, "vera")
        page = vera.get("/ui/approvals").text
    for hidden in ("\x1b", "\r", "\u202e", "<b>y</b>"):
        assert hidden not in page
    shown = ("\\x1b[31mURGENT\\x1b[0m\\r\\nfake row\\u202egnp.exe [bold]x[/] "
             "&lt;b&gt;y&lt;/b&gt;")
    assert shown in page
