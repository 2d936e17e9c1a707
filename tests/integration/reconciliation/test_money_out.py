"""Reconciliation sees money leaving at the gateway: a dashboard refund and a dispute are healed
once (through the same facts path as webhooks, so a webhook afterwards posts nothing more), a
refund amount that differs is reported, and a billkeep refund still being recorded is never
mistaken for a dashboard refund. On SQLite and PostgreSQL (the `db_url` fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.reconciliation.conftest import GATEWAY_ID, SECRET, WebhookEnv
from tests.integration.reconciliation.support import (
    EventFactory,
    body_of,
    insert_charge,
    local_snapshot,
)

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.domain.ids import new_id
from billkeep.engine import accounting
from billkeep.gateways.signing import sign_header
from billkeep.gateways.simulator import SimConfig, SimStore, SimulatorCore
from billkeep.gateways.simulator.params import DisputeCreate, PaymentIntentCreate, RefundCreate
from billkeep.reconciliation.operation import OPERATION, install
from billkeep.reconciliation.runner import ReconciliationConfig
from billkeep.reconciliation.sources import SimulatorStoreSource
from billkeep.reconciliation.views import all_breaks
from billkeep.storage.tables.core import charges, journal_entries, refunds
from billkeep.storage.tables.reconciliation import gateway_refunds
from billkeep.webhooks.endpoints import GatewayEndpoint

HOUR_MS = 3600_000
AMOUNT = 1_000


@pytest.fixture
def sim(tmp_path: Path, env: WebhookEnv) -> SimulatorCore:
    core = SimulatorCore(
        SimStore(str(tmp_path / "sim.db")), env.clock, SimConfig(async_settle_ms=None)
    )
    install(
        env.billkeep,
        lambda _t, _g: SimulatorStoreSource(core, page_size=2),
        ReconciliationConfig(grace_period_ms=HOUR_MS),
    )
    return core


def _paid_charge(env: WebhookEnv, sim: SimulatorCore, command: str) -> tuple[str, str]:
    """A payment at the gateway and its local charge, succeeded: (charge id, payment intent)."""
    response = sim.create_payment_intent(
        PaymentIntentCreate(
            AMOUNT,
            "usd",
            payment_method="pm_card_visa",
            confirm=True,
            metadata={"billkeep_command": command},
        )
    )
    reference = str(response.body["id"])
    charge_id, _ = insert_charge(
        env.billkeep.db,
        env.tenant_id,
        amount_minor=AMOUNT,
        gateway=GATEWAY_ID,
        now_ms=env.clock.now_ms(),
        reference=reference,
        command_id=command,
        status="succeeded",
    )
    return charge_id, reference


def _reconcile(env: WebhookEnv, key: str, start_ms: int) -> dict[str, Any]:
    window = {
        "gateway_id": GATEWAY_ID,
        "from": ms_to_rfc3339(start_ms),
        "to": ms_to_rfc3339(env.clock.now_ms() + 1000),
    }
    result = env.billkeep.execute(env.tenant_id, OPERATION, window, idempotency_key=key)
    assert result.status == 201, result.body_text
    return dict(result.body())


def _breaks(env: WebhookEnv, run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = all_breaks(env.billkeep.db, env.tenant_id, run["id"])
    return {str(b["gateway_reference"]): b for b in found}


def _entry_keys(env: WebhookEnv, prefix: str) -> list[str]:
    with env.billkeep.db.read() as conn:
        keys = conn.execute(
            sa.select(journal_entries.c.entry_key).where(
                journal_entries.c.tenant_id == env.tenant_id,
                journal_entries.c.entry_key.like(f"{prefix}%"),
            )
        ).scalars()
        return sorted(str(k) for k in keys)


def _deliver(env: WebhookEnv, event: dict[str, Any]) -> None:
    env.endpoints.add(GatewayEndpoint(env.tenant_id, GATEWAY_ID, (SECRET,)))
    body = body_of(event)
    received = env.service.receive(
        GATEWAY_ID, body, sign_header(body, [SECRET], env.clock.now_ms() // 1000)
    )
    env.service.process_received(received)


def test_a_dashboard_refund_is_healed_once_and_its_webhook_posts_nothing_more(
    env: WebhookEnv, sim: SimulatorCore
) -> None:
    start_ms = env.clock.now_ms()
    charge_id, reference = _paid_charge(env, sim, "cmd_refunded")
    refund = sim.create_refund(RefundCreate(payment_intent=reference, amount=300)).body
    env.clock.advance(2 * HOUR_MS)

    run = _reconcile(env, "run-1", start_ms)
    brk = _breaks(env, run)[refund["id"]]
    assert (brk["type"], brk["resource_id"], brk["healed"]) == (
        "missing_in_ledger",
        charge_id,
        True,
    )
    assert brk["resolution"] == "refund_learned"
    assert brk["expected"]["amount_minor"] == 300
    assert _entry_keys(env, "refund:") == [f"refund:{refund['id']}"]
    with env.billkeep.db.read() as conn:
        recorded = conn.execute(
            sa.select(gateway_refunds.c.reference, gateway_refunds.c.amount_minor).where(
                gateway_refunds.c.tenant_id == env.tenant_id
            )
        ).all()
        refunded = conn.execute(
            sa.select(charges.c.amount_refunded_minor).where(charges.c.id == charge_id)
        ).scalar_one()
    assert [tuple(r) for r in recorded] == [(refund["id"], 300)] and refunded == 300
    healed = local_snapshot(env.billkeep.db, env.tenant_id)

    again = _reconcile(env, "run-2", start_ms)  # a second run finds it matched
    assert refund["id"] not in _breaks(env, again)
    assert again["summary"]["healed"] == 0
    events = EventFactory(reference, AMOUNT, command_ref="cmd_refunded")
    _deliver(env, events.refund("evt_refund", refund["id"], 300, "succeeded"))
    _deliver(env, events.charge_refunded("evt_charge_refunded", [(refund["id"], 300)]))
    assert local_snapshot(env.billkeep.db, env.tenant_id) == healed


def test_a_dispute_is_healed_once(env: WebhookEnv, sim: SimulatorCore) -> None:
    start_ms = env.clock.now_ms()
    charge_id, reference = _paid_charge(env, sim, "cmd_disputed")
    dispute = sim.create_dispute(DisputeCreate(payment_intent=reference))
    env.clock.advance(2 * HOUR_MS)

    run = _reconcile(env, "run-1", start_ms)
    brk = _breaks(env, run)[dispute["id"]]
    assert (brk["type"], brk["resource_id"], brk["healed"], brk["resolution"]) == (
        "missing_in_ledger",
        charge_id,
        True,
        "dispute_learned",
    )
    assert _entry_keys(env, "dispute:") == [f"dispute:{dispute['id']}"]
    healed = local_snapshot(env.billkeep.db, env.tenant_id)
    again = _reconcile(env, "run-2", start_ms)
    assert dispute["id"] not in _breaks(env, again) and again["summary"]["healed"] == 0
    events = EventFactory(reference, AMOUNT, command_ref="cmd_disputed")
    _deliver(env, events.dispute("evt_dispute", dispute["id"], int(dispute["amount"])))
    assert local_snapshot(env.billkeep.db, env.tenant_id) == healed


def _billkeep_refund(
    env: WebhookEnv, charge_id: str, amount: int, status: str, reference: str | None
) -> str:
    """A refund row as the refund command leaves it (and its entry once succeeded)."""
    now = env.clock.now_ms()
    refund_id = new_id("re", now)
    with env.billkeep.db.write() as conn:
        conn.execute(
            refunds.insert().values(
                tenant_id=env.tenant_id,
                id=refund_id,
                charge_id=charge_id,
                command_id=new_id("cmd", now),
                amount_minor=amount,
                currency="usd",
                status=status,
                reason=None,
                gateway_idempotency_key=f"key-{refund_id}",
                gateway_reference=reference,
                created_at_ms=now,
                updated_at_ms=now,
            )
        )
        if reference is not None:
            accounting.post_refund_succeeded(
                conn, env.tenant_id, reference, charge_id, GATEWAY_ID, amount, "usd", now
            )
    return refund_id


def test_a_refund_amount_differing_from_the_books_is_reported_not_healed(
    env: WebhookEnv, sim: SimulatorCore
) -> None:
    start_ms = env.clock.now_ms()
    charge_id, reference = _paid_charge(env, sim, "cmd_mismatch")
    refund = sim.create_refund(RefundCreate(payment_intent=reference, amount=250)).body
    _billkeep_refund(env, charge_id, 300, "succeeded", str(refund["id"]))  # the books say 300
    env.clock.advance(2 * HOUR_MS)

    run = _reconcile(env, "run-1", start_ms)
    brk = _breaks(env, run)[refund["id"]]
    assert (brk["type"], brk["resource_id"], brk["healed"]) == ("amount_mismatch", charge_id, False)
    assert (brk["expected"], brk["actual"]) == ({"amount_minor": 300}, {"amount_minor": 250})
    assert run["summary"]["breaks"]["amount_mismatch"] == 1


def test_a_billkeep_refund_in_flight_is_not_mistaken_for_a_dashboard_refund(
    env: WebhookEnv, sim: SimulatorCore
) -> None:
    start_ms = env.clock.now_ms()
    charge_id, reference = _paid_charge(env, sim, "cmd_in_flight")
    # The refund command made the gateway call; its answer is not recorded yet.
    _billkeep_refund(env, charge_id, 400, "pending", None)
    refund = sim.create_refund(RefundCreate(payment_intent=reference, amount=400)).body
    env.clock.advance(2 * HOUR_MS)
    before = local_snapshot(env.billkeep.db, env.tenant_id)

    run = _reconcile(env, "run-1", start_ms)
    brk = _breaks(env, run)[refund["id"]]
    assert (brk["type"], brk["healed"], brk["resolution"]) == ("pending_timing", False, None)
    assert brk["actual"]["refund_in_flight"] is True
    after = local_snapshot(env.billkeep.db, env.tenant_id)
    # Nothing of the refund recorded or posted (the payment's fee is: it is healed beside it).
    for part in ("charges", "states", "external_refunds"):
        assert after[part] == before[part], part
    assert _entry_keys(env, "refund:") == []
    with env.billkeep.db.read() as conn:
        statuses = conn.execute(
            sa.select(refunds.c.status, refunds.c.gateway_reference).where(
                refunds.c.tenant_id == env.tenant_id
            )
        ).all()
    assert [tuple(r) for r in statuses] == [("pending", None)]


def test_a_billkeep_refund_the_gateway_does_not_have_is_missing_at_gateway(
    env: WebhookEnv, sim: SimulatorCore
) -> None:
    start_ms = env.clock.now_ms()
    charge_id, _reference = _paid_charge(env, sim, "cmd_phantom")
    _billkeep_refund(env, charge_id, 200, "succeeded", "re_never_at_gateway")
    env.clock.advance(2 * HOUR_MS)

    run = _reconcile(env, "run-1", start_ms)
    brk = _breaks(env, run)["re_never_at_gateway"]
    assert (brk["type"], brk["resource_id"], brk["healed"]) == (
        "missing_at_gateway",
        charge_id,
        False,
    )
