"""Delivering everything twice, for the duplicates case: every stream message published again with a new
transport id (so JetStream's duplicate window cannot drop it) but the same event, consumers frozen past
their ack wait so what they hold is delivered again, and every Stripe and Clerk webhook sent once more."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import stripe

from shared.bus.replaying import stream_sequence
from tests.conftest import System

# The streams a service publishes its events to, and media's work queue (a job request again), with the
# user that owns them: each copy goes out as its producer would send it again (only it may).
REPUBLISHED = {"IDENTITY": "identity", "LEDGER": "ledger", "PAYMENTS": "payments", "MEDIA": "media",
               "MEDIAWORK": "media"}  # fmt: skip


async def republish(system: System) -> int:
    """Publish every message of the streams again: same subject, payload and headers, a new Nats-Msg-Id."""
    reader = await system.connect("ops", "fault-duplicates")
    count = 0
    try:
        for stream, owner in REPUBLISHED.items():
            found = await _read(reader.jetstream(), stream)
            producer = await system.connect(owner, "fault-duplicates")
            try:
                js = producer.jetstream()
                for subject, data, headers in found:
                    headers = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
                    await js.publish(subject, data, headers={**headers, "Nats-Msg-Id": str(uuid.uuid4())})
                    count += 1
            finally:
                await producer.close()
    finally:
        await reader.close()
    return count


async def _read(js: Any, stream: str) -> list[tuple[str, bytes, dict[str, str]]]:
    last = int((await js.stream_info(stream)).state.last_seq)
    found: list[tuple[str, bytes, dict[str, str]]] = []
    if last == 0:
        return found
    done = asyncio.Event()

    async def take(msg: Any) -> None:
        seq = stream_sequence(msg)
        if seq <= last:
            found.append((msg.subject, msg.data, dict(msg.headers or {})))
        if seq >= last:
            done.set()

    sub = await js.subscribe(">", stream=stream, cb=take, ordered_consumer=True)
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await sub.unsubscribe()
    return found


async def unacknowledged(system: System) -> int:
    """Messages delivered to a durable consumer and not acknowledged, all streams together: held past the
    ack wait, JetStream must deliver each of them again."""
    nc = await system.connect("ops", "fault-duplicates")
    try:
        js = nc.jetstream()
        total = 0
        for stream in REPUBLISHED:
            total += sum(int(c.num_ack_pending or 0) for c in await js.consumers_info(stream))
        return total
    finally:
        await nc.close()


def replay_stripe(system: System) -> int:
    """Every event localstripe has sent, delivered again as Stripe retries one: the same event, freshly
    signed. Payments must answer each as a duplicate."""
    events = _stripe_events(system)
    for event in events:
        body = json.dumps(event).encode()
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), system.env["STRIPE_WEBHOOK_SECRET"])
        answer = httpx.post(f"{system.url('payments')}/webhooks/stripe", content=body, timeout=30,
                            headers={"Stripe-Signature": header, "Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 200, answer.text
    return len(events)


def _stripe_events(system: System) -> list[dict[str, Any]]:
    url = f"{system.env['STRIPE_API_BASE']}/v1/events"
    auth = {"Authorization": f"Bearer {system.env['STRIPE_SECRET_KEY']}"}
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = httpx.get(url, params=params, headers=auth, timeout=30).json()
        events += page["data"]
        if not page["has_more"]:
            return events
        params["starting_after"] = page["data"][-1]["id"]


def replay_clerk(system: System, deliveries: list[tuple[bytes, dict[str, str]]]) -> int:
    """Every Clerk webhook the load sent, sent again as Svix retries one: same svix-id, body and signature."""
    for body, headers in list(deliveries):
        answer = httpx.post(f"{system.url('identity')}/webhooks/clerk", content=body, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
    return len(deliveries)
