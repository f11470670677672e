"""Issue 6: the console and the chat widget in headless Chromium (Playwright, sync API).

The server runs as a `tidings serve` subprocess (port 0, memory store; see
tests/transports/browser.py); the test itself is a plain synchronous test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.transports.browser import ARGS, ARTIFACTS, CHROMIUM, TIMEOUT_MS, serve_console
from tests.transports.browser import need_browser as _need_browser

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def server() -> Iterator[dict[str, str]]:
    """`tidings serve --port 0 --store memory://`; yields the printed name: value lines."""
    with serve_console(("console", "demo agent token")) as urls:
        yield urls


def test_visitor_and_agent_in_the_browser(server: dict[str, str]) -> None:
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    console_url = server["console"]
    token = server["demo agent token"]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            # Separate contexts: the visitor and the agent share no storage.
            agent = browser.new_context().new_page()
            visitor = browser.new_context().new_page()
            for page in (agent, visitor):
                page.set_default_timeout(TIMEOUT_MS)
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            # The agent signs in with the demo token in the URL; the inbox starts empty.
            agent.goto(f"{console_url}?token={token}")
            expect(agent.get_by_test_id("connection-status")).to_have_attribute(
                "data-state", "connected", timeout=TIMEOUT_MS
            )
            expect(agent.get_by_test_id("badge")).to_have_attribute("data-count", "0")
            expect(agent.get_by_test_id("ticket-row")).to_have_count(0)

            # The visitor opens the widget and writes (an XSS attempt, too).
            visitor.goto(server.get("chat", console_url + "chat"))
            visitor.get_by_test_id("chat-bubble").click()
            expect(visitor.get_by_test_id("chat-panel")).to_be_visible()
            visitor.get_by_test_id("chat-input").fill("Hello, where is my order?")
            visitor.get_by_test_id("chat-send").click()
            mine = visitor.locator('[data-testid="chat-message"][data-direction="inbound"]')
            expect(mine).to_have_count(1, timeout=TIMEOUT_MS)
            expect(mine.first).to_have_attribute("data-pending", "false", timeout=TIMEOUT_MS)
            visitor.get_by_test_id("chat-input").fill(XSS)
            visitor.get_by_test_id("chat-send").click()
            expect(mine).to_have_count(2, timeout=TIMEOUT_MS)
            expect(mine.nth(1)).to_have_attribute("data-pending", "false", timeout=TIMEOUT_MS)
            expect(mine.nth(1).locator(".tw-body")).to_have_text(XSS)
            assert visitor.locator("#tidings-chat img").count() == 0

            # The ticket appears live in the console: unread dot, badge 1.
            row = agent.get_by_test_id("ticket-row")
            expect(row).to_have_count(1, timeout=TIMEOUT_MS)
            expect(row.get_by_test_id("unread-dot")).to_be_visible()
            expect(row).to_have_attribute("data-unread", "true")
            expect(agent.get_by_test_id("badge")).to_have_text("1")
            ticket_id = row.get_attribute("data-ticket-id")
            assert ticket_id

            # The agent opens it (which marks it read) and sees the XSS body as text.
            row.click()
            thread = agent.get_by_test_id("thread")
            inbound = thread.locator('[data-testid="message"][data-direction="inbound"]')
            expect(inbound).to_have_count(2, timeout=TIMEOUT_MS)
            expect(inbound.nth(1).get_by_test_id("message-body")).to_have_text(XSS)
            assert thread.locator("img").count() == 0
            expect(row.get_by_test_id("unread-dot")).to_have_count(0)
            expect(agent.get_by_test_id("badge")).to_have_text("0")

            # The agent replies; the visitor sees it.
            agent.get_by_test_id("reply-body").fill("It ships tomorrow.")
            agent.get_by_test_id("reply-send").click()
            expect(
                thread.locator('[data-testid="message"][data-direction="outbound"]')
            ).to_have_count(1)
            theirs = visitor.locator('[data-testid="chat-message"][data-direction="outbound"]')
            expect(theirs).to_have_count(1, timeout=TIMEOUT_MS)
            expect(theirs.first).to_contain_text("It ships tomorrow.")

            # Snooze until tomorrow, then close: the widget shows the conversation ended.
            agent.get_by_test_id("snooze-tomorrow").click()
            expect(row).to_have_attribute("data-state", "snoozed")
            agent.get_by_test_id("close-ticket").click()
            expect(row).to_have_attribute("data-state", "closed")
            expect(visitor.get_by_test_id("chat-ended")).to_be_visible(timeout=TIMEOUT_MS)

            # Block the profile.
            agent.get_by_test_id("block-profile").click()
            expect(agent.get_by_test_id("profile-blocked")).to_be_visible()
            expect(agent.get_by_test_id("unblock-profile")).to_be_visible()

            agent.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
            visitor.screenshot(path=str(ARTIFACTS / "widget.png"), full_page=True)
            assert dialogs == [], f"a dialog fired: {dialogs}"
        finally:
            browser.close()
