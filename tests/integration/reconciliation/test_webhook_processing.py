"""Webhook processing through the inbox against a real database: order-independence (property),
stale events, parking and release, refunds from outside billkeep, disputes."""

from __future__ import annotations

import itertools
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.integration.reconciliation.conftest import GATEWAY_ID, SECRET, WebhookEnv
from tests.integration.reconciliation.support import (
    EventFactory,
    body_of,
    insert_charge,
    local_snapshot,
)

from billkeep.domain.payment_state import PaymentStatus, is_at_most
from billkeep.gateways.signing import sign_header
from billkeep.storage.tables.core import charges
from billkeep.storage.tables.reconciliation import webhook_events
from billkeep.webhooks.endpoints import GatewayEndpoint
from billkeep.webhooks.inbox import EventOutcome
from billkeep.webhooks.state_store import load_state

AMOUNT = 1000
_STATUS_RANK = {"pending": 0, "failed": 1, "succeeded": 2}


def _deliver(env: WebhookEnv, tenant_id: str, event: dict[str, Any]) -> EventOutcome:
    """Ingest (signed, through the inbox) and process one delivery; return the event's outcome."""
    env.endpoints.add(GatewayEndpoint(tenant_id, GATEWAY_ID, (SECRET,)))
    body = body_of(event)
    received = env.service.receive(
        GATEWAY_ID, body, sign_header(body, [SECRET], env.clock.now_ms() // 1000)
    )
    env.service.process_received(received)
    with env.billkeep.db.read() as conn:
        outcome = conn.execute(
            sa.select(webhook_events.c.outcome).where(
                webhook_events.c.tenant_id == tenant_id, webhook_events.c.id == received.id
            )
        ).scalar_one()
    return EventOutcome(outcome)


def _universe(factory: EventFactory) -> list[dict[str, Any]]:
    return [
        factory.processing("evt_processing"),
        factory.failed("evt_failed"),
        factory.succeeded("evt_succeeded"),
        factory.refund("evt_re1_created", "re_1", 300, "pending"),
        factory.refund("evt_re1_updated", "re_1", 300, "succeeded", "refund.updated"),
        factory.refund("evt_re2", "re_2", 200, "succeeded"),
        factory.charge_refunded("evt_charge_refunded", [("re_1", 300), ("re_2", 200)]),
        factory.dispute("evt_dispute", "dp_1", AMOUNT),
    ]


def _charge_row(env: WebhookEnv, tenant_id: str) -> Any:
    with env.billkeep.db.read() as conn:
        return conn.execute(sa.select(charges).where(charges.c.tenant_id == tenant_id)).one()


def _run(env: WebhookEnv, name: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    tenant_id = env.add_tenant(name)
    insert_charge(
        env.billkeep.db,
        tenant_id,
        amount_minor=AMOUNT,
        gateway=GATEWAY_ID,
        now_ms=env.clock.now_ms(),
        reference="pi_prop",
    )
    previous_state = None
    previous_rank, previous_refunded, previous_keys = 0, 0, set[str]()
    for event in events:
        _deliver(env, tenant_id, event)
        with env.billkeep.db.read() as conn:
            state, _ = load_state(conn, tenant_id, GATEWAY_ID, "pi_prop")
        if previous_state is not None:
            assert is_at_most(previous_state, state), "the payment state moved backward"
        charge = _charge_row(env, tenant_id)
        assert _STATUS_RANK[charge.status] >= previous_rank, "the charge moved backward"
        assert charge.amount_refunded_minor >= previous_refunded
        snapshot = local_snapshot(env.billkeep.db, tenant_id)
        keys = {row[0] for row in snapshot["ledger"]}
        assert previous_keys <= keys, "a ledger entry disappeared"
        previous_state, previous_rank = state, _STATUS_RANK[charge.status]
        previous_refunded, previous_keys = charge.amount_refunded_minor, keys
    return local_snapshot(env.billkeep.db, tenant_id)


_counter = itertools.count()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_order_with_duplicates_ends_in_the_same_state(
    env: WebhookEnv, data: st.DataObject
) -> None:
    universe = _universe(EventFactory("pi_prop", AMOUNT))
    chosen = data.draw(
        st.lists(
            st.sampled_from(range(len(universe))), min_size=1, max_size=len(universe), unique=True
        ),
        label="events",
    )
    deliveries = chosen + data.draw(st.lists(st.sampled_from(chosen), max_size=4), label="dups")
    shuffled = data.draw(st.permutations(deliveries), label="order")
    run = next(_counter)
    canonical = _run(env, f"canonical-{run}", [universe[i] for i in sorted(set(chosen))])
    permuted = _run(env, f"permuted-{run}", [universe[i] for i in shuffled])
    assert permuted == canonical


def test_full_story_posts_each_fact_once(env: WebhookEnv) -> None:
    factory = EventFactory("pi_prop", AMOUNT)
    events = _universe(factory)
    final = _run(env, "story", events + events)
    charge_rows = final["charges"]
    assert charge_rows == [("succeeded", 500, "pi_prop", None)]
    keys = sorted({row[0] for row in final["ledger"]})
    assert keys == [
        "charge:*:sale",
        "dispute:dp_1",
        "payment:pi_prop:succeeded",
        "refund:re_1",
        "refund:re_2",
    ]
    assert final["external_refunds"] == [("re_1", 300), ("re_2", 200)]


def test_stale_failure_after_success_changes_nothing(env: WebhookEnv) -> None:
    tenant_id = env.tenant_id
    insert_charge(
        env.billkeep.db,
        tenant_id,
        amount_minor=AMOUNT,
        gateway=GATEWAY_ID,
        now_ms=env.clock.now_ms(),
        reference="pi_s",
    )
    factory = EventFactory("pi_s", AMOUNT)
    assert _deliver(env, tenant_id, factory.succeeded("e1")) is EventOutcome.APPLIED
    before = local_snapshot(env.billkeep.db, tenant_id)
    assert _deliver(env, tenant_id, factory.failed("e2")) is EventOutcome.STALE
    assert _deliver(env, tenant_id, factory.processing("e3")) is EventOutcome.DUPLICATE
    assert local_snapshot(env.billkeep.db, tenant_id) == before
    # Another amount for the same payment contradicts what is known: surfaced, nothing changes.
    assert (
        _deliver(env, tenant_id, EventFactory("pi_s", 999).succeeded("e4")) is EventOutcome.CONFLICT
    )
    assert local_snapshot(env.billkeep.db, tenant_id) == before


def test_parked_until_the_charge_records_its_reference(env: WebhookEnv) -> None:
    tenant_id = env.tenant_id
    factory = EventFactory("pi_late", AMOUNT)
    assert _deliver(env, tenant_id, factory.succeeded("e1")) is EventOutcome.PARKED
    charge_id, _ = insert_charge(
        env.billkeep.db,
        tenant_id,
        amount_minor=AMOUNT,
        gateway=GATEWAY_ID,
        now_ms=env.clock.now_ms(),
        reference="pi_late",
    )
    env.clock.advance(env.service.processor.config.retry_delay_ms(1))
    assert env.service.processor.process_due() == 1
    assert _charge_row(env, tenant_id).status == "succeeded"
    # A later event about the same payment also releases parked ones at once.
    assert charge_id


def test_event_found_by_command_metadata_settles_a_charge_without_reference(
    env: WebhookEnv,
) -> None:
    tenant_id = env.tenant_id
    charge_id, command = insert_charge(
        env.billkeep.db,
        tenant_id,
        amount_minor=AMOUNT,
        gateway=GATEWAY_ID,
        now_ms=env.clock.now_ms(),
    )
    factory = EventFactory("pi_cmd", AMOUNT, command_ref=command)
    assert _deliver(env, tenant_id, factory.succeeded("e1")) is EventOutcome.APPLIED
    row = _charge_row(env, tenant_id)
    assert (row.id, row.status, row.gateway_reference) == (charge_id, "succeeded", "pi_cmd")
    # A second payment for the same command is not merged into the charge.
    other = EventFactory("pi_dup", AMOUNT, command_ref=command)
    assert _deliver(env, tenant_id, other.succeeded("e2")) is EventOutcome.CONFLICT
    assert _charge_row(env, tenant_id).gateway_reference == "pi_cmd"


def test_foreign_payment_is_ignored_after_asking_the_gateway(env: WebhookEnv) -> None:
    class Objects:
        def payment_intent(self, tenant_id: str, gateway_id: str, reference: str) -> dict[str, Any]:
            return {"id": reference, "metadata": {}}

        def charge_payment_intent(self, tenant_id: str, gateway_id: str, charge_id: str) -> str:
            return "pi_foreign"

    env.service.processor.objects = Objects()
    tenant_id = env.tenant_id
    assert (
        _deliver(env, tenant_id, EventFactory("pi_foreign", 100).succeeded("e1"))
        is EventOutcome.PARKED
    )
    env.clock.advance(env.service.processor.config.park_fetch_after_ms)
    env.service.processor.process_due()
    with env.billkeep.db.read() as conn:
        outcome, reason = conn.execute(
            sa.select(webhook_events.c.outcome, webhook_events.c.reason).where(
                webhook_events.c.tenant_id == tenant_id
            )
        ).one()
    assert outcome == "ignored" and "not made by billkeep" in reason


def test_refund_of_a_billkeep_refund_command_settles_it(env: WebhookEnv, fake_gateway: Any) -> None:
    bk = env.billkeep
    tenant_id = env.tenant_id
    customer = bk.create_customer(tenant_id, {"payment_method": "pm_card_visa"}, "c1").body()["id"]
    charge = bk.create_charge(
        tenant_id, {"customer_id": customer, "amount": AMOUNT, "currency": "usd"}, "k1"
    )
    assert charge.status == 201
    reference = charge.body()["gateway_reference"]
    refund = bk.create_refund(tenant_id, {"charge_id": charge.body()["id"], "amount": 400}, "r1")
    assert refund.status == 201
    refund_ref = refund.body()["gateway_reference"]
    factory = EventFactory(reference, AMOUNT)
    outcome = _deliver(env, tenant_id, factory.refund("e1", refund_ref, 400, "succeeded"))
    assert outcome is EventOutcome.DUPLICATE  # the API response already told us
    row = _charge_row(env, tenant_id)
    assert row.amount_refunded_minor == 400
    snapshot = local_snapshot(bk.db, tenant_id)
    assert snapshot["external_refunds"] == []
    assert PaymentStatus.SUCCEEDED.value in snapshot["states"][0][1]


def test_stale_refund_event_after_a_later_one_changes_nothing(env: WebhookEnv) -> None:
    """The refund half of the stale rule, through the inbox: once a refund is known succeeded, a
    late `failed`/`canceled` report of it is stale and a late `pending` one is implied; nothing
    changes (state, charge, ledger). Reports in the other order end in the same place."""
    factory = EventFactory("pi_refund", AMOUNT)
    late_first = env.add_tenant("lower reports first")
    lower = [
        factory.refund("e_failed", "re_1", 300, "failed", "refund.updated"),
        factory.refund("e_canceled", "re_1", 300, "canceled", "refund.updated"),
        factory.refund("e_pending", "re_1", 300, "pending", "refund.updated"),
    ]
    for tenant_id in (env.tenant_id, late_first):
        insert_charge(
            env.billkeep.db,
            tenant_id,
            amount_minor=AMOUNT,
            gateway=GATEWAY_ID,
            now_ms=env.clock.now_ms(),
            reference="pi_refund",
        )
    tenant_id = env.tenant_id
    assert _deliver(env, tenant_id, factory.succeeded("e_paid")) is EventOutcome.APPLIED
    succeeded = factory.refund("e_refunded", "re_1", 300, "succeeded")
    assert _deliver(env, tenant_id, succeeded) is EventOutcome.APPLIED
    before = local_snapshot(env.billkeep.db, tenant_id)
    assert _charge_row(env, tenant_id).amount_refunded_minor == 300
    outcomes = [_deliver(env, tenant_id, event) for event in lower]
    assert outcomes == [EventOutcome.STALE, EventOutcome.STALE, EventOutcome.DUPLICATE]
    assert local_snapshot(env.billkeep.db, tenant_id) == before

    # The same reports with the lower ones first: each raises the refund, the end is the same.
    for event in [factory.succeeded("e_paid"), *reversed(lower), succeeded]:
        _deliver(env, late_first, event)
    assert local_snapshot(env.billkeep.db, late_first) == before
