"""The console's search box in headless Chromium (contract v3, "Team workflow"): it
shows matching customers and messages, opens a message's ticket and a customer's
profile. It takes the README's screenshot of a search (`TIDINGS_README_SCREENSHOTS=1`
writes it to `docs/screenshots/`, as tests/transports/test_browser_team.py does)."""

from __future__ import annotations

from tests.transports.browser import ARGS, CHROMIUM, TIMEOUT_MS, need_browser
from tests.transports.test_browser import XSS
from tests.transports.test_browser_team import (  # noqa: F401 (the `server` fixture)
    SAM,
    screenshot,
    server,
    sms_from,
)

PHONE = "+393331234567"


def _seed(base: str) -> None:
    """A customer with a conversation about order 1001, and another with no match."""
    sms_from(base, "Giulia Rossi", PHONE, "SM1", "Buongiorno, perché l'ordine 1001 non è ancora arrivato?")
    sms_from(base, "Marco Bianchi", "+393339876543", "SM2", "Posso cambiare l'indirizzo dell'ordine 1002?")
    sms_from(base, "Giulia Rossi", PHONE, "SM3", f"Ordine 1001: {XSS}")


def test_console_search_opens_the_ticket_and_the_profile(server: dict[str, str]) -> None:  # noqa: F811
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    console_url = server["console"]
    _seed(console_url.rstrip("/"))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{console_url}?token={SAM}")
            expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "connected")
            expect(page.get_by_test_id("ticket-row")).to_have_count(2)

            # Every word, without case or accents: "PERCHE ordine" finds only Giulia's message.
            page.get_by_test_id("search-q").fill("PERCHE ordine")
            page.get_by_test_id("search-q").press("Enter")
            results = page.get_by_test_id("search-results")
            expect(results).to_be_visible()
            found = page.get_by_test_id("search-message")
            expect(found).to_have_count(1)
            expect(found.locator("mark")).to_have_text(["perché", "ordine"])
            expect(page.get_by_test_id("search-profile")).to_have_count(0)

            # "1001 Giulia": no message has both; "ordine 1001" has two, newest first, the
            # hostile one shown as text.
            page.get_by_test_id("search-q").fill("ordine 1001")
            page.get_by_test_id("search-q").press("Enter")
            expect(found).to_have_count(2)
            expect(found.first).to_contain_text(XSS)
            assert page.locator("#search-results img").count() == 0
            expect(found.nth(1)).to_contain_text("Giulia Rossi")
            screenshot(page, "console-search.png")

            # A message opens its ticket.
            found.nth(1).click()
            expect(results).to_be_hidden()
            expect(page.locator("#ticket-view")).to_be_visible()
            expect(page.get_by_test_id("ticket-title")).to_have_text("Giulia Rossi")
            expect(page.get_by_test_id("thread")).to_contain_text("non è ancora arrivato?")

            # A customer opens their profile.
            page.get_by_test_id("search-q").fill("marco")
            page.get_by_test_id("search-q").press("Enter")
            profile = page.get_by_test_id("search-profile")
            expect(profile).to_have_count(1)
            expect(page.get_by_test_id("search-message")).to_have_count(0)
            profile.click()
            expect(page.locator("#ticket-view")).to_be_hidden()
            expect(page.get_by_test_id("profile-pane")).to_contain_text("Marco Bianchi")
            expect(page.get_by_test_id("profile-pane")).to_contain_text("+393339876543")

            # Escape closes the results.
            page.get_by_test_id("search-q").fill("1002")
            page.get_by_test_id("search-q").press("Enter")
            expect(page.get_by_test_id("search-message")).to_have_count(1)
            page.keyboard.press("Escape")
            expect(results).to_be_hidden()
            assert dialogs == [], f"a dialog fired: {dialogs}"
        finally:
            browser.close()
