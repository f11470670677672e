"""Search (contract v3, "Team workflow"): `messages.search` and `profiles.search` through
the inbox, on the text indexes the actors keep in their own batches."""

from __future__ import annotations

import msgspec
import pytest
import trio

from tests.actors.helpers import PHONE, Harness
from tidings.actors.errors import InboxError


async def test_messages_search_finds_every_word_without_case_or_accents_newest_first(
    harness: Harness,
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile(name="Giulia Rossi", email="giulia@example.it")
    first = await inbox.receive_sms("SM1", PHONE, "Perché l'ordine 1001 non è arrivato?")
    await trio.sleep(1)
    assert first.ticket is not None
    reply = await inbox.ticket_reply(first.ticket, "L'ORDINE 1001 è partito ieri", author="a1")
    await trio.sleep(1)
    await inbox.receive_sms("SM2", PHONE, "order 1002 please")
    page = await inbox.messages_search("ordine 1001")
    assert [r.message.id for r in page.results] == [reply.id, first.id] and page.cursor is None
    assert msgspec.to_builtins(page.results[1]) == {
        "message": msgspec.to_builtins(first),
        "profile": {"id": profile, "name": "Giulia Rossi", "phone": PHONE,
                    "email": "giulia@example.it"},
    }  # fmt: skip
    assert [r.message.id for r in (await inbox.messages_search("PERCHE arrivato")).results] == [
        first.id
    ]
    assert (await inbox.messages_search("ordine 1002")).results == []  # every word
    assert (await inbox.messages_search("ordin")).results == []  # words, not parts


async def test_messages_search_pages_with_its_cursor(harness: Harness) -> None:
    inbox = harness.inbox
    await harness.subscribed_profile()
    for i in range(25):
        await inbox.receive_sms(f"SM{i}", PHONE, f"tracking question {i}")
        await trio.sleep(1)
    seen: list[str] = []
    cursor = None
    sizes = []
    while True:
        page = await inbox.messages_search("Tracking QUESTION", limit=10, cursor=cursor)
        sizes.append(len(page.results))
        seen += [r.message.body for r in page.results]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sizes == [10, 10, 5]
    assert seen == [f"tracking question {i}" for i in reversed(range(25))]
    assert len((await inbox.messages_search("tracking")).results) == 20  # the default limit


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ({"q": ""}, "q"),
        ({"q": ' *"( '}, "q"),
        ({"q": "x" * 501}, "q"),
        ({"q": "order", "limit": 0}, "limit"),
        ({"q": "order", "limit": 51}, "limit"),
        ({"q": "order", "cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_messages_search_refuses_bad_arguments_naming_them(
    harness: Harness, args: dict[str, object], argument: str
) -> None:
    with pytest.raises(InboxError) as refused:
        await harness.inbox.messages_search(**args)  # type: ignore[arg-type]
    assert refused.value.code == "bad_request"
    assert refused.value.detail.startswith(f"{argument}: ")


async def test_profiles_search_matches_name_email_or_phone_and_follows_changes(
    harness: Harness,
) -> None:
    inbox = harness.inbox
    ada = await harness.subscribed_profile(name="Ada Lovelace", email="ada@example.com")
    other = await harness.subscribed_profile("+15559870000", name="Àda Byron")
    assert [p.id for p in await inbox.profiles_search("lovelace")] == [ada]
    assert [p.id for p in await inbox.profiles_search("ADA@example.com")] == [ada]
    assert [p.id for p in await inbox.profiles_search("+1 (555) 123-0000")] == [ada]
    assert {p.id for p in await inbox.profiles_search("ada")} == {ada, other}
    found = await inbox.profiles_search("byron")
    assert msgspec.to_builtins(found) == msgspec.to_builtins([await inbox.profile_get(other)])
    await inbox.upsert_profile({"id": ada, "name": "Augusta King"})
    assert await inbox.profiles_search("lovelace") == []
    assert [p.id for p in await inbox.profiles_search("augusta")] == [ada]


async def test_profiles_search_answers_at_most_20(harness: Harness) -> None:
    for i in range(25):
        await harness.inbox.upsert_profile({"email": f"buyer{i}@shop.example", "name": "Buyer"})
    found = await harness.inbox.profiles_search("buyer")
    assert len(found) == 20 and len({p.id for p in found}) == 20
