"""Issue 14 in the console, in headless Chromium: the "Assigned to me" and "Unassigned"
views, the assign control, private notes in their own style (and never in the visitor's
widget), and each ticket's one-line preview (contract v3, *Team workflow*).

It also takes the README's screenshots of assignment and of a note: to refresh them, run
it with `TIDINGS_README_SCREENSHOTS=1`, which writes `docs/screenshots/*.png`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.transports.browser import (
    ARGS,
    ARTIFACTS,
    CHROMIUM,
    ROOT,
    TIMEOUT_MS,
    need_browser,
    serve_console,
)

SAM, ANA = "sam-token", "ana-token"
AGENTS = [
    {"id": "sam", "name": "Sam", "role": "support", "token": SAM},
    {"id": "ana", "name": "Ana", "role": "support", "token": ANA},
]
KEY = "api-key"
README_SHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture
def server() -> Iterator[dict[str, str]]:
    """A console with two agents, an API key, and the autoresponder off (so each SMS
    ticket's preview is the customer's own words)."""
    env = {
        "TIDINGS_AGENTS": json.dumps(AGENTS),
        "TIDINGS_API__KEYS": json.dumps([KEY]),
        "TIDINGS_SETTINGS__SMS": json.dumps({"autoresponder": {"mode": "off"}}),
    }
    with serve_console(("console",), env) as urls:
        yield urls


def sms_from(base: str, name: str, phone: str, sid: str, body: str) -> None:
    """A subscribed profile that writes an SMS (unsigned webhook: loopback, no auth token)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as client:
        profile = {"phone": phone, "name": name, "consent": {"transactional": True}}
        assert client.post("/api/profiles", json=profile).status_code == 200
        form = {"MessageSid": sid, "From": phone, "To": "+15550001111", "Body": body}
        assert client.post("/sms/inbound", data=form).status_code == 200


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))
    if os.environ.get("TIDINGS_README_SCREENSHOTS") == "1":
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(README_SHOTS / name))


def signed_in(browser: Any, console: str, token: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 760}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{console}?token={token}")
    from playwright.sync_api import expect

    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "connected")
    return page


def test_assignment_views_notes_and_previews_in_the_console(server: dict[str, str]) -> None:
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    console = server["console"]
    base = console.rstrip("/")
    sms_from(
        base,
        "Ada Lovelace",
        "+15551230001",
        "SM1",
        "Hi, where is my order #1001? It was due Monday.",
    )
    sms_from(base, "Grace Hopper", "+15551230002", "SM2", "Can I change the delivery address?")
    dialogs: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            sam = signed_in(browser, console, SAM)
            ana = signed_in(browser, console, ANA)
            visitor = browser.new_context().new_page()
            for page in (sam, ana, visitor):
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            # Each row shows a one-line preview of its last message.
            rows = sam.get_by_test_id("ticket-row")
            expect(rows).to_have_count(2)
            ada = rows.filter(has_text="Ada Lovelace")
            grace = rows.filter(has_text="Grace Hopper")
            expect(ada.get_by_test_id("ticket-row-preview")).to_have_text(
                "Hi, where is my order #1001? It was due Monday."
            )
            preview_style = ada.get_by_test_id("ticket-row-preview").evaluate(
                "el => [getComputedStyle(el).whiteSpace, getComputedStyle(el).textOverflow]"
            )
            assert preview_style == ["nowrap", "ellipsis"]  # one line, cut with an ellipsis

            # Nothing is assigned yet: "Assigned to me" is empty for both agents.
            sam.get_by_test_id("view-mine").click()
            expect(rows).to_have_count(0)
            expect(sam.get_by_test_id("list-empty")).to_be_visible()
            ana.get_by_test_id("view-mine").click()
            expect(ana.get_by_test_id("ticket-row")).to_have_count(0)
            sam.get_by_test_id("view-all").click()
            expect(rows).to_have_count(2)

            # Sam takes Ada's ticket; it shows in his "Assigned to me" view.
            ada.click()
            expect(sam.get_by_test_id("ticket-assignee")).to_have_text("Unassigned")
            sam.get_by_test_id("assign-me").click()
            expect(sam.get_by_test_id("ticket-assignee")).to_have_text("Assigned to you")
            expect(ada.get_by_test_id("ticket-row-assignee")).to_have_text("→ you")

            # ...and gives Grace's to Ana, whose "Assigned to me" view gets it live.
            grace.click()
            sam.get_by_test_id("assign-agent").fill("ana")
            sam.get_by_test_id("assign-submit").click()
            expect(sam.get_by_test_id("ticket-assignee")).to_have_text("Assigned to ana")
            theirs = ana.get_by_test_id("ticket-row")
            expect(theirs).to_have_count(1)
            expect(theirs).to_contain_text("Grace Hopper")
            expect(theirs.get_by_test_id("ticket-row-assignee")).to_have_text("→ you")

            # An unknown agent is refused, with the error shown.
            sam.get_by_test_id("assign-agent").fill("nobody")
            sam.get_by_test_id("assign-submit").click()
            toast = sam.get_by_test_id("error-toast")
            expect(toast.last).to_have_attribute("data-code", "not_found")
            expect(sam.get_by_test_id("ticket-assignee")).to_have_text("Assigned to ana")
            toast.last.click()  # dismissed
            expect(toast).to_have_count(0)
            sam.get_by_test_id("assign-agent").fill("")

            sam.get_by_test_id("view-mine").click()
            expect(rows).to_have_count(1)
            expect(rows).to_contain_text("Ada Lovelace")
            sam.get_by_test_id("view-unassigned").click()
            expect(rows).to_have_count(0)
            sam.get_by_test_id("view-mine").click()
            expect(rows).to_have_count(1)
            rows.first.click()
            screenshot(sam, "console-assignment.png")

            # A web chat visitor writes; Sam leaves a private note, then replies.
            visitor.goto(server.get("chat", console + "chat"))
            visitor.get_by_test_id("chat-bubble").click()
            visitor.get_by_test_id("chat-input").fill("Is my coupon SPRING10 still valid?")
            visitor.get_by_test_id("chat-send").click()
            sam.get_by_test_id("view-all").click()
            chat_row = sam.locator('[data-testid="ticket-row"][data-channel="webchat"]')
            expect(chat_row).to_have_count(1)
            expect(chat_row.get_by_test_id("ticket-row-preview")).to_have_text(
                "Is my coupon SPRING10 still valid?"
            )
            chat_row.click()
            sam.get_by_test_id("compose-note").click()
            expect(sam.get_by_test_id("reply-form")).to_have_attribute("data-mode", "note")
            expect(sam.get_by_test_id("note-hint")).to_be_visible()
            sam.get_by_test_id("reply-body").fill(
                "PRIVATE: SPRING10 expired yesterday, honour it once."
            )
            sam.get_by_test_id("reply-send").click()
            thread = sam.get_by_test_id("thread")
            note = thread.locator('[data-testid="message"][data-kind="note"]')
            expect(note).to_have_count(1)
            expect(note.locator(".msg-kind")).to_have_text("Private note")
            sam.get_by_test_id("compose-reply").click()
            sam.get_by_test_id("reply-body").fill("Yes, it is! Use it at checkout.")
            sam.get_by_test_id("reply-send").click()
            reply = thread.locator(
                '[data-testid="message"][data-kind="support"][data-direction="outbound"]'
            )
            expect(reply).to_have_count(1)

            # The note looks different from a reply (amber, dashed, full width).
            style = "el => { const s = getComputedStyle(el); return [s.backgroundColor, s.borderStyle]; }"
            note_look = note.get_by_test_id("message-body").evaluate(style)
            reply_look = reply.get_by_test_id("message-body").evaluate(style)
            assert note_look == ["rgb(255, 251, 235)", "dashed"], note_look
            assert reply_look[0] != note_look[0] and reply_look[1] != "dashed"

            # The visitor gets the reply, never the note; the list previews the reply.
            theirs_msgs = visitor.locator('[data-testid="chat-message"][data-direction="outbound"]')
            expect(theirs_msgs).to_have_count(1)
            expect(theirs_msgs.first).to_contain_text("Yes, it is!")
            expect(visitor.locator("#tidings-chat")).not_to_contain_text("PRIVATE")
            expect(chat_row.get_by_test_id("ticket-row-preview")).to_have_text(
                "Reply: Yes, it is! Use it at checkout."
            )
            visitor.reload()
            visitor.get_by_test_id("chat-bubble").click()
            expect(theirs_msgs).to_have_count(1)
            expect(visitor.locator("#tidings-chat")).not_to_contain_text("PRIVATE")

            # A note may also be left on a closed ticket.
            sam.get_by_test_id("close-ticket").click()
            expect(sam.get_by_test_id("ended-banner")).to_be_visible()
            sam.get_by_test_id("compose-note").click()
            expect(sam.get_by_test_id("reply-body")).to_be_enabled()
            sam.get_by_test_id("reply-body").fill("Closed: coupon honoured.")
            sam.get_by_test_id("reply-send").click()
            expect(note).to_have_count(2)
            sam.get_by_test_id("compose-reply").click()
            expect(sam.get_by_test_id("reply-body")).to_be_disabled()
            sam.get_by_test_id("compose-note").click()
            screenshot(sam, "console-note.png")
            assert dialogs == [], f"a dialog fired: {dialogs}"
        finally:
            browser.close()
