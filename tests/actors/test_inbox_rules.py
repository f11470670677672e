"""SMS and web chat settings and replies: R11, R13 (restart), R16, R17, R19–R23, R25–R27."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from tests.actors.helpers import ACCOUNT, PHONE, START, Harness, offline_visitor
from tidings.actors import thread
from tidings.actors.brand import Timing
from tidings.actors.errors import InboxError
from tidings.actors.inbox import open_inbox
from tidings.actors.model import Attribution, Order, OrderItem
from tidings.actors.outbound import DeliveryError
from tidings.engine import TrioWallClock
from tidings.engine.store.memory import MemoryStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

Clock = trio.testing.MockClock


async def test_r11_activity_filtered_by_metric_and_orders_only_with_shopify(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    await inbox.add_event(profile, "Viewed Product", "2027-01-01T10:00:00+00:00", {"sku": "1"})
    await inbox.add_event(profile, "Placed Order", "2027-01-02T10:00:00+00:00", {})
    order = Order("o1", [OrderItem("Mug", 2, 9.5)], 19.0, "USD", "2027-01-02T10:00:00+00:00")
    await inbox.add_order(profile, order)
    viewed = await inbox.profile_get(profile, metric="Viewed Product")
    assert [a.metric for a in viewed.activity] == ["Viewed Product"]
    assert viewed.orders is None  # R09: orders only where the integration is Shopify
    with pytest.raises(InboxError) as caught:
        await inbox.add_event(profile, "X", "yesterday", {})
    assert caught.value.code == "bad_request" and caught.value.detail.startswith("time")


async def test_r19_keywords_change_consent_reply_and_open_no_ticket(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    stop = await inbox.receive_sms("SM1", PHONE, "  stop ")
    assert (stop.kind, stop.ticket) == ("keyword", None)
    assert not (await inbox.profile_get(profile)).subscribed
    start = await inbox.receive_sms("SM2", PHONE, "START")
    assert start.kind == "keyword"
    assert (await inbox.profile_get(profile)).consent.marketing
    not_keyword = await inbox.receive_sms("SM3", PHONE, "STOP PLEASE")
    assert not_keyword.kind == "support" and not_keyword.ticket is not None
    await trio.sleep(1)
    bodies = [s.body for s in harness.sms.sent]
    assert any("unsubscribed" in b for b in bodies) and any(
        "subscribed to messages again" in b for b in bodies
    )
    assert (await inbox.tickets_list()).tickets[0].id == not_keyword.ticket


async def test_r20_autoresponder_modes(harness: Harness, autojump_clock: Clock) -> None:
    inbox = harness.inbox
    await inbox.receive_sms("SM1", "+15550000001", "hi")  # not consented, mode everyone
    await harness.subscribed_profile("+15550000002")
    await inbox.settings_update({"sms": {"autoresponder": {"mode": "non_consented"}}})
    await inbox.receive_sms("SM2", "+15550000002", "hi")  # consented: no autoresponse
    await inbox.receive_sms("SM3", "+15550000003", "hi")  # not consented: answered
    await inbox.settings_update({"sms": {"autoresponder": {"mode": "off"}}})
    await inbox.receive_sms("SM4", "+15550000004", "hi")
    await trio.sleep(1)
    answered = sorted(s.to for s in harness.sms.sent)
    assert answered == ["+15550000001", "+15550000003"]
    assert harness.sms.sent[0].body.startswith(
        "Acme: This inbox isn't monitored. For help, email support@acme.example."
    )
    with pytest.raises(InboxError) as caught:
        await inbox.settings_update({"sms": {"autoresponder": {"text": "{{ nope }}"}}})
    assert caught.value.detail.startswith("settings.sms.autoresponder.text")


async def test_r17_links_are_shortened_and_clicks_recorded(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    ticket = (await inbox.receive_sms("SM1", PHONE, "hi")).ticket
    reply = await inbox.ticket_reply(ticket, "See https://shop.example/item?id=42.", author="a1")  # type: ignore[arg-type]
    assert "shop.example" not in reply.body
    short = reply.body.split()[-1].rstrip(".")
    assert short.startswith("https://support.acme.example/l/")
    url = await inbox.follow_link(short.rsplit("/", 1)[1])
    assert url == "https://shop.example/item?id=42"
    await trio.sleep(1)
    clicked = await inbox.profile_get(profile, metric="Clicked SMS link")
    assert clicked.activity[0].properties["url"] == url
    assert await inbox.follow_link("nope") is None
    await inbox.settings_update({"sms": {"shorten_links": False}})
    plain = await inbox.ticket_reply(ticket, "https://shop.example/x", author="a1")  # type: ignore[arg-type]
    assert plain.body == "https://shop.example/x"


async def test_r21_new_ticket_email_needs_a_recipient_and_goes_to_all(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    with pytest.raises(InboxError) as caught:
        await inbox.settings_update({"notifications": {"new_ticket_email": {"enabled": True}}})
    assert caught.value.code == "bad_request"
    await inbox.settings_update(
        {
            "notifications": {
                "new_ticket_email": {
                    "enabled": True,
                    "recipients": ["a@acme.example", "b@acme.example"],
                }
            }
        }
    )
    await inbox.receive_sms("SM1", PHONE, "new one")
    await inbox.receive_sms("SM2", PHONE, "same ticket")
    await trio.sleep(1)
    [email] = harness.mail.sent
    assert email.to == ("a@acme.example", "b@acme.example")
    assert email.subject == f"New SMS ticket from {PHONE}"


async def test_r22_quick_replies(harness: Harness, autojump_clock: Clock) -> None:
    inbox = harness.inbox
    hours = await inbox.quick_reply_add("Hours", "We are open 9 to 5.")
    await inbox.quick_reply_add("Returns", "Returns take 30 days.")
    assert [q.name for q in await inbox.quick_replies_list("OPEN")] == ["Hours"]
    await inbox.quick_reply_update(hours.id, body="We are open 8 to 6.")
    assert (await inbox.quick_replies_list("8 to 6"))[0].id == hours.id
    await inbox.quick_reply_delete(hours.id)
    assert [q.name for q in await inbox.quick_replies_list()] == ["Returns"]
    with pytest.raises(InboxError) as caught:
        await inbox.quick_reply_delete(hours.id)
    assert caught.value.code == "not_found"


async def test_r23_welcome_once_then_it_belongs_to_the_new_ticket(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    await inbox.settings_update({"webchat": {"welcome_message": "Hi! How can we help?"}})
    ready = await inbox.chat_hello(None)
    assert ready.greeting is not None and ready.greeting.kind == "welcome"
    again = await inbox.chat_hello(ready.session)
    assert again.greeting is None  # not on resume
    message = await inbox.chat_message(ready.session, "where is my order")
    view = await inbox.ticket_get(message.ticket)  # type: ignore[arg-type]
    assert [(m.kind, m.ticket) for m in view.messages] == [
        ("welcome", message.ticket),
        ("support", message.ticket),
    ]


async def test_r23_office_hours_replace_the_welcome(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    await inbox.settings_update(
        {"webchat": {"welcome_message": "Hi", "office_hours": {
            "enabled": True, "days": {"wed": [["09:00", "17:00"]]},
            "inside_message": "We're here", "outside_message": "We're away"}}}
    )  # fmt: skip
    inside = await inbox.chat_hello(None)  # Wednesday 10:00 New York
    assert inside.greeting is not None and (inside.greeting.kind, inside.greeting.body) == (
        "office_hours",
        "We're here",
    )
    await trio.sleep(8 * 3600)
    outside = await inbox.chat_hello(None)
    assert outside.greeting is not None and outside.greeting.body == "We're away"


async def test_r25_reply_attributed_to_last_campaign_received_once_within_window(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    await inbox.send_message(profile, "campaign", "c1", "Winter sale", "20% off")
    await trio.sleep(3600)
    first = await inbox.receive_sms("SM1", PHONE, "is it still on?")
    second = await inbox.receive_sms("SM2", PHONE, "hello?")
    assert first.attributed_to is not None and (
        first.attributed_to.kind,
        first.attributed_to.id,
    ) == ("campaign", "c1")
    assert second.attributed_to is None  # only the first reply
    page = await inbox.tickets_list(attributed_to="campaign:c1")
    assert [t.id for t in page.tickets] == [first.ticket]
    await inbox.send_message(profile, "flow", "f1", "Welcome flow", "hi")
    await trio.sleep(86400 + 60)  # past the window
    late = await inbox.receive_sms("SM3", PHONE, "late")
    assert late.attributed_to is None


async def test_r25_campaign_needs_consent(harness: Harness, autojump_clock: Clock) -> None:
    profile = (await harness.inbox.upsert_profile({"phone": PHONE})).id
    with pytest.raises(InboxError) as caught:
        await harness.inbox.send_message(profile, "campaign", "c1", "Sale", "hi")
    assert caught.value.code == "not_subscribed"


async def test_r26_replies_report_encoding_and_segments(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    await harness.subscribed_profile()
    ticket = (await inbox.receive_sms("SM1", PHONE, "hi")).ticket
    long = await inbox.ticket_reply(ticket, "a" * 161, author="a1")  # type: ignore[arg-type]
    assert (long.encoding, long.segments) == ("GSM-7", 2)
    emoji = await inbox.ticket_reply(
        ticket, "Thanks 🎉 CODE10", media=["https://cdn/x.gif"], author="a1"
    )  # type: ignore[arg-type]
    assert (emoji.encoding, emoji.segments) == ("UCS-2", 1) and emoji.media == ["https://cdn/x.gif"]


async def test_r27_quiet_hours_hold_then_send_anyway_or_schedule(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    await harness.subscribed_profile(location={"timezone": "Asia/Tokyo"})  # 00:00 in Tokyo
    ticket = (await inbox.receive_sms("SM1", PHONE, "hi")).ticket
    assert ticket
    with pytest.raises(InboxError) as caught:
        await inbox.ticket_reply(ticket, "late night", author="a1")
    assert caught.value.code == "quiet_hours"
    assert caught.value.extra == {"local_time": "00:00", "timezone": "Asia/Tokyo"}
    await inbox.ticket_reply(ticket, "urgent", author="a1", send_anyway=True)
    scheduled = await inbox.ticket_reply(ticket, "good morning", author="a1", schedule=True)
    await trio.sleep(60)
    assert [
        s.body for s in harness.sms.sent if s.body != "urgent" and "monitored" not in s.body
    ] == []
    await trio.sleep(8 * 3600)  # 08:00 in Tokyo
    assert scheduled.id in {s.message_id for s in harness.sms.sent}


async def test_r16_followup_once_three_minutes_after_the_last_reply_while_offline(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    session, ticket = await offline_visitor(harness, "visitor@example.com")
    assert (await inbox.ticket_get(ticket)).ticket.visitor_online is False
    for text in ("one", "two", "three"):
        await inbox.ticket_reply(ticket, text, author="a1")
        await trio.sleep(60)
    found = (await inbox.ticket_get(ticket)).ticket
    assert found.followup is not None and found.followup.status == "scheduled"
    assert not harness.mail.sent
    await trio.sleep(121)  # 3 minutes after the last reply
    [email] = harness.mail.sent
    assert email.subject == "There's a new message from Acme"
    assert email.to == ("visitor@example.com",)
    assert f"https://support.acme.example/chat?session={session}" in email.text
    assert "three" in email.text
    await trio.sleep(600)
    assert len(harness.mail.sent) == 1  # never twice for one burst
    assert (await inbox.ticket_get(ticket)).ticket.followup.status == "sent"  # type: ignore[union-attr]


async def test_r16_followup_email_links_to_chat_page_url(autojump_clock: Clock) -> None:
    """Contract v3: the follow-up links to `{page_url}?session=<token>` when the brand
    hosts the widget on its own page (`chat.page_url`)."""
    account = dataclasses.replace(ACCOUNT, chat_page_url="https://shop.acme.example/help")
    mail = OutboxMail()
    async with open_inbox(
        MemoryStore(), account=account, timing=Timing(), sms=OutboxSms(), mail=mail,
        clock=TrioWallClock(START),
    ) as inbox:  # fmt: skip
        harness = Harness(inbox, OutboxSms(), mail, MemoryStore())
        session, ticket = await offline_visitor(harness, "v@example.com")
        await inbox.ticket_reply(ticket, "answer", author="a1")
        await trio.sleep(181)
        [email] = mail.sent
        link = f"https://shop.acme.example/help?session={session}"
        assert f"Continue the conversation: {link}" in email.text
        assert f'href="{link}"' in email.html
        assert "support.acme.example/chat" not in email.text + email.html


async def test_r16_visitor_back_online_cancels_the_followup(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    session, ticket = await offline_visitor(harness, "visitor@example.com")
    await inbox.ticket_reply(ticket, "answer", author="a1")
    await inbox.chat_connected(session)
    await trio.sleep(1)
    assert (await inbox.ticket_get(ticket)).ticket.followup is None
    await trio.sleep(600)
    assert not harness.mail.sent


async def test_r16_no_email_address_means_impossible(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    _, ticket = await offline_visitor(harness, None)
    await inbox.ticket_reply(ticket, "answer", author="a1")
    found = (await inbox.ticket_get(ticket)).ticket
    assert found.followup is not None and found.followup.status == "impossible"


async def test_r13_snooze_survives_a_restart(autojump_clock: Clock) -> None:
    store = MemoryStore()
    options = {"account": ACCOUNT, "timing": Timing(), "sms": OutboxSms(), "mail": OutboxMail()}
    async with open_inbox(store, clock=TrioWallClock(START), **options) as inbox:  # type: ignore[arg-type]
        ticket = (await inbox.receive_sms("SM1", PHONE, "hi")).ticket
        assert ticket
        await inbox.ticket_set_state(ticket, "snoozed", "later_today")
    async with open_inbox(store, clock=TrioWallClock(START + 3600), **options) as inbox:  # type: ignore[arg-type]
        await trio.sleep(2 * 3600 + 1)
        woken = (await inbox.ticket_get(ticket)).ticket
        assert (woken.state, woken.unread) == ("open", True)


async def test_r30_a_chat_message_resent_with_its_client_id_is_stored_once(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ready = await inbox.chat_hello(None)
    first = await inbox.chat_message(ready.session, "hello", client_id="c-1")
    again = await inbox.chat_message(ready.session, "hello", client_id="c-1")  # after a reconnect
    other = await inbox.chat_message(ready.session, "hello", client_id="c-2")
    assert again.id == first.id and other.id != first.id
    view = await inbox.ticket_get(first.ticket)  # type: ignore[arg-type]
    assert [m.id for m in view.messages] == [first.id, other.id]


async def test_r16_presence_idle_visitor_goes_offline_and_any_frame_brings_it_back(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ready = await inbox.chat_hello(None, email="visitor@example.com")
    await inbox.chat_connected(ready.session)
    ticket = (await inbox.chat_message(ready.session, "hi")).ticket
    assert ticket
    await trio.sleep(31)  # connected, but no frame for the idle timeout
    assert (await inbox.ticket_get(ticket)).ticket.visitor_online is False
    await inbox.chat_message(ready.session, "still here")  # a message frame is a sign of life
    await trio.sleep(1)
    assert (await inbox.ticket_get(ticket)).ticket.visitor_online is True
    await trio.sleep(25)
    await inbox.chat_seen(ready.session)  # so is a ping
    await trio.sleep(25)
    assert (await inbox.ticket_get(ticket)).ticket.visitor_online is True
    events = [e["event"] for e in await harness.events(0)]
    assert events.count("visitor.offline") == 1 and events.count("visitor.online") == 2


async def test_r25_a_failed_campaign_leaves_the_last_received_one_to_attribute_to(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    await inbox.send_message(profile, "campaign", "c1", "Winter sale", "20% off")
    await trio.sleep(60)  # the provider took it: received
    harness.sms.fail_next(DeliveryError("unreachable", permanent=True))
    failed = await inbox.send_message(profile, "campaign", "c2", "Spring sale", "30% off")
    await trio.sleep(60)
    stored = await thread.load(harness.store, failed.id)
    assert stored is not None and stored.message.status == "failed"
    reply = await inbox.receive_sms("SM1", PHONE, "is the sale still on?")
    assert reply.attributed_to == Attribution("campaign", "c1", "Winter sale")
    again = await inbox.receive_sms("SM2", PHONE, "hello?")
    assert again.attributed_to is None  # c1 was answered once already


async def test_r11_with_shopify_a_profile_without_orders_has_an_empty_list(
    autojump_clock: Clock,
) -> None:
    account = dataclasses.replace(ACCOUNT, ecommerce="shopify")
    async with open_inbox(
        MemoryStore(), account=account, timing=Timing(), sms=OutboxSms(), mail=OutboxMail(),
        clock=TrioWallClock(START),
    ) as inbox:  # fmt: skip
        profile = (await inbox.upsert_profile({"phone": PHONE})).id
        assert (await inbox.profile_get(profile)).orders == []
        order = Order("o1", [OrderItem("Mug", 2, 9.5)], 19.0, "USD", "2027-01-02T10:00:00+00:00")
        await inbox.add_order(profile, order)
        assert [o.id for o in (await inbox.profile_get(profile)).orders or []] == ["o1"]
