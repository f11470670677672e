"""The console's search box in headless Chromium (contract v3, "Team workflow"): it
shows matching customers and messages, opens a message's ticket and a customer's
profile. Writes tests/artifacts/console-search.png (the README's screenshot)."""

from __future__ import annotations

import httpx

from tests.transports.test_browser import (  # noqa: F401 (the `server` fixture)
    ARGS,
    ARTIFACTS,
    CHROMIUM,
    TIMEOUT_MS,
    XSS,
    _need_browser,
    server,
)

PHONE = "+393331234567"


def _seed(base: str, api_key: str) -> None:
    """A customer with a conversation about order 1001, and another with no match."""
    with httpx.Client(base_url=base, timeout=10) as client:
        for phone, name in ((PHONE, "Giulia Rossi"), ("+393339876543", "Marco Bianchi")):
            r = client.post("/api/profiles", headers={"Authorization": f"Bearer {api_key}"},
                            json={"phone": phone, "name": name})  # fmt: skip
            assert r.status_code == 200, r.text
        for sid, phone, body in (
            ("SM1", PHONE, "Buongiorno, perché l'ordine 1001 non è ancora arrivato?"),
            ("SM2", "+393339876543", "Posso cambiare l'indirizzo dell'ordine 1002?"),
            ("SM3", PHONE, f"Ordine 1001: {XSS}"),
        ):
            r = client.post("/sms/inbound", data={"MessageSid": sid, "From": phone,
                                                   "To": "+15550001111", "Body": body})  # fmt: skip
            assert r.status_code == 200, r.text


def test_console_search_opens_the_ticket_and_the_profile(server: dict[str, str]) -> None:  # noqa: F811
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console_url = server["console"]
    _seed(console_url.rstrip("/"), server["api key"])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{console_url}?token={server['demo agent token']}")
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
            page.screenshot(path=str(ARTIFACTS / "console-search.png"))

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
