"""`GET /metrics` through prometheus-client: the engine's gauges and counters keep their
names, and the commit, webhook and first-response histograms count what happened."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.transports.helpers import make_config
from tidings.transports.server import running_server

PHONE = "+15551230000"


async def scrape(base: str) -> dict[str, dict[str, float]]:
    """Each metric family's samples (name with labels → value); parsing checks the format."""
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{base}/metrics")
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        family.name: {
            s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items())): s.value
            for s in family.samples
        }
        for family in text_string_to_metric_families(answer.text)
    }


async def test_metrics_keep_their_names_and_histograms_count_what_happened() -> None:
    config = make_config(**{"sms.auth_token": ""})  # an unsigned webhook, for brevity
    async with running_server(config) as one, running_server(config) as other:
        consent = {"marketing": False, "transactional": True}  # replies need SMS consent
        await one.inbox.upsert_profile({"phone": PHONE, "consent": consent})
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{one.base_url}/sms/inbound",
                data={"MessageSid": "SM1", "From": PHONE, "Body": "hello"},
            )
        assert answer.status_code == 200
        found = await one.inbox.tickets_list()
        ticket = found.tickets[0].id
        await one.inbox.ticket_reply(ticket, "first answer", author="a1")
        await one.inbox.ticket_reply(ticket, "second answer", author="a1")
        metrics = await scrape(one.base_url)
        for name in ("tidings_messages_in", "tidings_messages_out", "tidings_dead_letters",
                     "tidings_actors_quarantined"):  # fmt: skip
            assert f"{name}_total" in metrics[name]
        for name in ("tidings_active_actors", "tidings_mailbox_depth", "tidings_timers_pending",
                     "tidings_event_seq", "tidings_store_read_latency_seconds"):  # fmt: skip
            assert name in metrics[name]
        assert metrics["tidings_messages_in"]["tidings_messages_in_total"] == 1
        webhook = metrics["tidings_webhook_latency_seconds"]
        assert webhook["tidings_webhook_latency_seconds_count"] == 1
        assert 0 < webhook["tidings_webhook_latency_seconds_sum"] < 5
        commits = metrics["tidings_commit_latency_seconds"]["tidings_commit_latency_seconds_count"]
        assert commits >= 3  # the inbound SMS and both replies, at least
        first = metrics["tidings_first_response_seconds"]
        assert first["tidings_first_response_seconds_count"] == 1  # the second reply is not first
        assert first["tidings_first_response_seconds_bucket,le=+Inf"] == 1
        # each app has its own registry: the other server saw nothing
        quiet = await scrape(other.base_url)
        assert quiet["tidings_webhook_latency_seconds"]["tidings_webhook_latency_seconds_count"] == 0
        assert quiet["tidings_first_response_seconds"]["tidings_first_response_seconds_count"] == 0
