"""Contract v3, "Web chat identity and embedding", in headless Chromium: a brand's page on
another origin loads the widget with one `<script>` tag; the widget connects back to its
server with the signed identity of its `data-identity-*` attributes; and a `?session=`
link never silently replaces the session the visitor holds (session fixation)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.transports.browser import ARGS, CHROMIUM, TIMEOUT_MS, need_browser, serve_console

SECRET = "brand-secret"
CUSTOMER = "customer@shop.example"
API_KEY = "embed-api-key"


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # the test's output is for failures


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[str]:
    """The brand's site: a static server on a second local port; yields its origin."""
    handler = functools.partial(_QuietFiles, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _settings(shop_origin: str) -> dict[str, str]:
    return {
        "TIDINGS_CHAT__IDENTITY_SECRET": SECRET,
        "TIDINGS_CHAT__ALLOWED_ORIGINS": json.dumps([shop_origin]),
        "TIDINGS_API__KEYS": json.dumps([API_KEY]),
    }


def _post(base: str, path: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def test_widget_embedded_on_another_origin_joins_the_signed_profile_and_resists_fixation(
    shop: str, tmp_path: Path
) -> None:
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    with serve_console(("console",), _settings(shop)) as printed:
        base = printed["console"].rstrip("/")
        customer = _post(base, "/api/profiles", {"email": CUSTOMER, "name": "Cara"})
        signature = hmac.new(SECRET.encode(), CUSTOMER.encode(), hashlib.sha256).hexdigest()
        (tmp_path / "index.html").write_text(
            "<!doctype html><html><head><meta charset='utf-8'></head><body><h1>Shop</h1>"
            f"<script type='module' src='{base}/widget.js' data-identity-email='{CUSTOMER}'"
            f" data-identity-signature='{signature}'></script></body></html>"
        )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_context().new_page()
                page.set_default_timeout(TIMEOUT_MS)
                dialogs: list[str] = []
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                hellos: list[dict[str, object]] = []
                page.on("websocket", lambda ws: ws.on(
                    "framereceived", lambda f: hellos.append(json.loads(f)) if '"ready"' in f else None
                ))  # fmt: skip
                page.goto(shop + "/index.html")
                page.get_by_test_id("chat-bubble").click()
                page.get_by_test_id("chat-input").fill("Where is my order?")
                page.get_by_test_id("chat-send").click()
                mine = page.locator('[data-testid="chat-message"][data-direction="inbound"]')
                expect(mine.first).to_have_attribute("data-pending", "false", timeout=TIMEOUT_MS)
                assert hellos and hellos[0]["profile"] == customer["id"]  # the signed profile
                held = page.evaluate("localStorage.getItem('tidings.session')")
                assert held == hellos[0]["session"]

                # A planted link with another session: the visitor is asked and declines.
                page.goto(shop + "/index.html?session=planted-by-someone-else")
                page.wait_for_function("!location.search.includes('session=')")
                assert len(dialogs) == 1 and "e-mail link" in dialogs[0]
                assert page.evaluate("localStorage.getItem('tidings.session')") == held
            finally:
                browser.close()
