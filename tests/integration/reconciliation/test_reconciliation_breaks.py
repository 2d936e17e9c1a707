"""Reconciliation against a gateway simulator's store: one injected break of each type, reported
with its evidence; healable ones heal once; the charge command finishes from a healed charge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.reconciliation.support import insert_charge

from billkeep.domain.clock import ManualClock, ms_to_rfc3339
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway, Fault
from billkeep.gateways.simulator import SimConfig, SimStore, SimulatorCore
from billkeep.gateways.simulator.params import PaymentIntentCreate
from billkeep.reconciliation.matching import GatewayStatus
from billkeep.reconciliation.operation import OPERATION, install
from billkeep.reconciliation.runner import ReconciliationConfig
from billkeep.reconciliation.sources import InMemorySource, SimulatorStoreSource, SourcePayment
from billkeep.reconciliation.views import all_breaks
from billkeep.storage.tables.core import journal_entries

GATEWAY = "gw_recon"
HOUR_MS = 3600_000


@pytest.fixture
def sim(tmp_path: Path, clock: ManualClock) -> SimulatorCore:
    return SimulatorCore(SimStore(str(tmp_path / "sim.db")), clock, SimConfig(async_settle_ms=None))


def _pay(sim: SimulatorCore, amount: int, command: str | None, currency: str = "usd") -> str:
    metadata = {"billkeep_command": command} if command else {}
    response = sim.create_payment_intent(
        PaymentIntentCreate(
            amount, currency, payment_method="pm_card_visa", confirm=True, metadata=metadata
        )
    )
    assert response.status_code == 200, response.body
    return str(response.body["id"])


def _reconcile(bk: Billkeep, tenant: str, key: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    result = bk.execute(
        tenant,
        OPERATION,
        {"gateway_id": GATEWAY, "from": ms_to_rfc3339(start_ms), "to": ms_to_rfc3339(end_ms)},
        idempotency_key=key,
    )
    assert result.status == 201, result.body_text
    return dict(result.body())


def test_each_break_type_with_evidence_and_heals_once(
    db_url: str, clock: ManualClock, sim: SimulatorCore, make_billkeep: Callable[..., Billkeep]
) -> None:
    bk = make_billkeep(db_url, FakeGateway(name=GATEWAY, clock=clock))
    install(
        bk,
        lambda _t, _g: SimulatorStoreSource(sim, page_size=3),
        ReconciliationConfig(grace_period_ms=HOUR_MS),
    )
    tenant, _ = bk.tenants.create_tenant("recon", clock.now_ms())
    start_ms = clock.now_ms()
    db, now = bk.db, clock.now_ms()

    def local(
        amount: int, command: str, status: str, reference: str | None, currency: str = "usd"
    ) -> str:
        return insert_charge(
            db,
            tenant,
            amount_minor=amount,
            gateway=GATEWAY,
            now_ms=now,
            reference=reference,
            command_id=command,
            status=status,
            currency=currency,
        )[0]

    ok_ref = _pay(sim, 1000, "cmd_a_ok")
    ok_charge = local(1000, "cmd_a_ok", "succeeded", ok_ref)  # fee not posted: healed
    foreign = _pay(sim, 700, None)  # made outside billkeep
    local(500, "cmd_b_gone", "succeeded", "pi_never_at_gateway")
    amount_ref = _pay(sim, 1200, "cmd_c_amount")
    local(1000, "cmd_c_amount", "succeeded", amount_ref)
    _pay(sim, 1000, "cmd_d_currency", currency="eur")
    local(1000, "cmd_d_currency", "succeeded", None)
    missed_ref = _pay(sim, 900, "cmd_e_missed")  # the webhook never came: local still pending
    missed_charge = local(900, "cmd_e_missed", "pending", None)
    status_ref = _pay(sim, 800, "cmd_f_status")
    local(800, "cmd_f_status", "failed", status_ref)
    first_ref = _pay(sim, 600, "cmd_g_dup")
    second_ref = _pay(sim, 600, "cmd_g_dup")
    local(600, "cmd_g_dup", "succeeded", first_ref)
    clock.advance(2 * HOUR_MS)
    young = _pay(sim, 300, None)  # inside the grace period: timing, not yet a break

    run = _reconcile(bk, tenant, "run-1", start_ms, clock.now_ms() + 1000)
    breaks = {(b["type"], b["gateway_reference"]): b for b in all_breaks(bk.db, tenant, run["id"])}
    counts = run["summary"]["breaks"]
    assert counts == {
        "amount_mismatch": 1,
        "currency_mismatch": 1,
        "duplicate": 1,
        "missing_at_gateway": 1,
        "missing_in_ledger": 3,  # the foreign payment, and two unposted fees (healed)
        "pending_timing": 1,
        "status_mismatch": 2,
    }
    assert run["summary"]["healed"] == 3
    assert breaks[("missing_in_ledger", foreign)]["actual"] == {"ledger_record": None}
    assert breaks[("missing_in_ledger", foreign)]["expected"]["amount_minor"] == 700
    assert breaks[("missing_in_ledger", ok_ref)]["healed"] is True
    assert breaks[("missing_in_ledger", ok_ref)]["resolution"] == "fee_posted"
    assert breaks[("missing_in_ledger", first_ref)]["healed"] is True
    assert breaks[("missing_at_gateway", "pi_never_at_gateway")]["actual"] == {
        "gateway_record": None
    }
    assert breaks[("amount_mismatch", amount_ref)]["expected"] == {"amount_minor": 1000}
    assert breaks[("amount_mismatch", amount_ref)]["actual"] == {"amount_minor": 1200}
    currency = next(b for (t, _), b in breaks.items() if t == "currency_mismatch")
    assert (currency["expected"], currency["actual"]) == ({"currency": "usd"}, {"currency": "eur"})
    healed = breaks[("status_mismatch", missed_ref)]
    assert healed["healed"] is True and healed["resolution"] == "finalized_succeeded,fee_posted"
    assert healed["resource_id"] == missed_charge
    open_status = breaks[("status_mismatch", status_ref)]
    assert open_status["healed"] is False
    assert (open_status["expected"], open_status["actual"]) == (
        {"status": "failed"},
        {"status": "succeeded"},
    )
    duplicate = breaks[("duplicate", second_ref)]
    assert duplicate["actual"]["succeeded_payments"] == 2 and duplicate["healed"] is False
    assert breaks[("pending_timing", young)]["actual"]["grace_period_ms"] == HOUR_MS
    assert bk.queries.charge(tenant, missed_charge)["status"] == "succeeded"
    assert bk.queries.charge(tenant, ok_charge)["status"] == "succeeded"

    def fee_entries() -> int:
        with bk.db.read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(journal_entries)
                    .where(
                        journal_entries.c.tenant_id == tenant,
                        journal_entries.c.entry_key.like("fee:%"),
                    )
                ).scalar_one()
            )

    assert fee_entries() == 3
    # Re-running the window heals nothing twice: the healed ones now match.
    again = _reconcile(bk, tenant, "run-2", start_ms, clock.now_ms() + 1000)
    assert again["summary"]["healed"] == 0
    assert again["summary"]["breaks"]["status_mismatch"] == 1
    assert again["summary"]["breaks"]["missing_in_ledger"] == 1
    assert again["summary"]["matched"] == run["summary"]["matched"] + 3
    assert fee_entries() == 3
    # The same key replays the first run's response; nothing runs again.
    replay = bk.execute(
        tenant,
        OPERATION,
        {
            "gateway_id": GATEWAY,
            "from": ms_to_rfc3339(start_ms),
            "to": ms_to_rfc3339(clock.now_ms() + 1000),
        },
        idempotency_key="run-1",
    )
    assert replay.replayed and replay.body()["id"] == run["id"]


def test_charge_command_finishes_from_the_healed_charge(
    db_url: str, clock: ManualClock, make_billkeep: Callable[..., Billkeep]
) -> None:
    faults: list[Fault] = [Fault.UNKNOWN_AFTER]
    gateway = FakeGateway(
        name=GATEWAY,
        clock=clock,
        faults=lambda op, _key: faults.pop() if faults and op == "create_payment" else None,
    )
    bk = make_billkeep(db_url, gateway)
    tenant, _ = bk.tenants.create_tenant("heal", clock.now_ms())
    customer = bk.create_customer(tenant, {"payment_method": "pm_card_visa"}, "c").body()["id"]
    start_ms = clock.now_ms()
    first = bk.create_charge(
        tenant, {"customer_id": customer, "amount": 2500, "currency": "usd"}, "k"
    )
    assert first.status == 202  # the payment happened; the answer was lost
    [payment] = gateway.find_payments(first.command_id)
    source = InMemorySource(
        [
            SourcePayment(
                payment.reference or "",
                first.command_id,
                2500,
                "usd",
                GatewayStatus.SUCCEEDED,
                start_ms,
                None,
            )
        ]
    )
    install(bk, lambda _t, _g: source, ReconciliationConfig(grace_period_ms=0))
    run = _reconcile(bk, tenant, "r", start_ms - 1000, start_ms + 1000)
    assert run["summary"]["healed"] == 1
    assert bk.queries.charge(tenant, first.resource_id or "")["status"] == "succeeded"
    clock.advance(HOUR_MS)
    resumed = bk.create_charge(
        tenant, {"customer_id": customer, "amount": 2500, "currency": "usd"}, "k"
    )
    assert resumed.status == 201 and resumed.final
    assert resumed.body()["gateway_reference"] == payment.reference
    assert gateway.payment_count() == 1
