"""Signed webhook delivery from the outbox to a local receiver: retries, duplicates, shuffle."""

from __future__ import annotations

import itertools
import time
from typing import Any

import stripe

WEBHOOK_SECRET = "whsec_test_simulator"  # the receiver only verifies; the simulator signs with it

PAY = {"amount": 900, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}


def _start(sim_factory: Any, receiver: Any, *extra: str) -> Any:
    return sim_factory(
        "--seed",
        "11",
        "--webhook-url",
        receiver.url,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--webhook-retry-base-ms",
        "100",
        "--poll-interval-ms",
        "20",
        "--async-settle-ms",
        "0",
        *extra,
    )


def _verified(received: Any) -> Any:
    payload = received.body.decode()
    assert stripe.WebhookSignature.verify_header(
        payload, received.signature, WEBHOOK_SECRET, tolerance=300
    )
    return stripe.Webhook.construct_event(payload, received.signature, WEBHOOK_SECRET)


def test_events_arrive_signed_and_verify(sim_factory: Any, receiver: Any) -> None:
    sim = _start(sim_factory, receiver)
    client = sim.client()
    intent = client.v1.payment_intents.create(params=PAY)
    client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 100})
    events = [_verified(r) for r in receiver.wait_for(3)]
    assert sorted(e.type for e in events) == [
        "charge.refunded",
        "payment_intent.succeeded",
        "refund.created",
    ]
    succeeded = next(e for e in events if e.type == "payment_intent.succeeded")
    assert succeeded.data.object.id == intent.id
    assert (
        succeeded.id
        == client.v1.events.list(params={"type": "payment_intent.succeeded"}).data[0].id
    )
    tampered = receiver.received[0].body.replace(b"usd", b"eur")
    try:
        stripe.WebhookSignature.verify_header(
            tampered.decode(), receiver.received[0].signature, WEBHOOK_SECRET, tolerance=300
        )
        raise AssertionError("a tampered payload must not verify")
    except stripe.SignatureVerificationError:
        pass
    for _ in range(50):
        if sim.state()["webhooks"] == {"pending": 0, "delivered": 3, "failed": 0}:
            break
        time.sleep(0.05)
    assert sim.state()["webhooks"] == {"pending": 0, "delivered": 3, "failed": 0}


def test_non_2xx_is_retried_with_backoff(sim_factory: Any, receiver: Any) -> None:
    receiver.fail_first = 2
    sim = _start(sim_factory, receiver)
    sim.client().v1.payment_intents.create(params=PAY)
    [received] = receiver.wait_for(1)
    assert _verified(received).type == "payment_intent.succeeded"
    attempts = _logged_attempts(sim, 3)
    log = sim.control("GET", "/_sim/webhooks")["data"]
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "delivered"]
    assert [a["status_code"] for a in attempts] == [500, 500, 200]
    gaps_ms = [b["at_ms"] - a["at_ms"] for a, b in itertools.pairwise(attempts)]
    assert gaps_ms[0] >= 100 and gaps_ms[1] >= 200  # 100 ms, then doubled
    assert log[0]["status"] == "delivered"


def test_attempts_are_bounded(sim_factory: Any, receiver: Any) -> None:
    receiver.fail_first = 1_000
    sim = _start(
        sim_factory, receiver, "--webhook-max-attempts", "3", "--webhook-retry-base-ms", "20"
    )
    sim.client().v1.payment_intents.create(params=PAY)
    for _ in range(100):
        if sim.state()["webhooks"]["failed"] == 1:
            break
        time.sleep(0.05)
    assert sim.state()["webhooks"] == {"pending": 0, "delivered": 0, "failed": 1}
    assert receiver.requests_seen == 3


def test_duplicate_fault_delivers_each_event_twice(sim_factory: Any, receiver: Any) -> None:
    sim = _start(sim_factory, receiver)
    sim.control("POST", "/_sim/faults", {"webhooks": {"duplicate_probability": 1.0}})
    sim.client().v1.payment_intents.create(params=PAY)
    received = receiver.wait_for(2)
    time.sleep(0.3)
    assert len(receiver.received) == 2
    first, second = (_verified(r) for r in received)
    assert first.id == second.id  # the same event: receivers must dedupe by id


def _logged_attempts(sim: Any, expected: int) -> list[dict[str, Any]]:
    """The first event's delivery attempts, once the simulator has logged `expected` of them: the
    receiver has a body before the simulator logs its delivery, so reading at once would race."""
    attempts: list[dict[str, Any]] = []
    for _ in range(200):
        attempts = sim.control("GET", "/_sim/webhooks")["data"][0]["attempt_log"]
        if len(attempts) >= expected:
            break
        time.sleep(0.05)
    return attempts


def test_drop_first_attempt_then_retry(sim_factory: Any, receiver: Any) -> None:
    sim = _start(sim_factory, receiver)
    sim.control("POST", "/_sim/faults", {"webhooks": {"drop_first_attempt_probability": 1.0}})
    sim.client().v1.payment_intents.create(params=PAY)
    receiver.wait_for(1)
    attempts = _logged_attempts(sim, 2)
    assert [a["outcome"] for a in attempts] == ["dropped", "delivered"]
    assert receiver.requests_seen == 1


def _shuffled_order(sim_factory: Any, receiver: Any, seed: int) -> tuple[list[str], list[str]]:
    sim = _start(sim_factory, receiver)
    # Every event waits a minute (delay fault), so all are pending when the flush sends them.
    sim.control(
        "POST",
        "/_sim/faults",
        {
            "seed": seed,
            "webhooks": {"shuffle": True, "delay_ms": [60_000, 60_000]},
        },
    )
    client = sim.client()
    created = [
        client.v1.payment_intents.create(params={**PAY, "amount": 100 + i}).id for i in range(8)
    ]
    time.sleep(0.3)
    assert receiver.received == [] and sim.state()["webhooks"]["pending"] == 8
    assert sim.control("POST", "/_sim/webhooks/flush")["attempted"] == 8
    order = [_verified(r).data.object.id for r in receiver.wait_for(8)]
    return created, order


def test_shuffle_fault_reorders_deterministically(sim_factory: Any, receiver: Any) -> None:
    created, order = _shuffled_order(sim_factory, receiver, seed=5)
    assert sorted(order) == sorted(created) and order != created
    receiver.received.clear()
    # A fresh process with the same --seed issues the same ids and shuffles them the same way.
    created_again, again = _shuffled_order(sim_factory, receiver, seed=5)
    assert created_again == created
    assert again == order
