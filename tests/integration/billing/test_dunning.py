"""Dunning: a declined invoice is retried on the schedule, by the clock, then paid or given up."""

from __future__ import annotations

import sqlalchemy as sa
from tests.integration.billing.helpers import (
    create_customer,
    create_plan,
    create_subscription,
    invoice_rows,
    iso,
    ledger_totals,
)

from billkeep.billing.config import DAY_MS, BillingConfig
from billkeep.billing.queries import BillingQueries
from billkeep.billing.runs import run_billing_cycle
from billkeep.domain.clock import ManualClock
from billkeep.domain.periods import ms_from_civil
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.storage.tables.core import charges, customers

JAN_1 = ms_from_civil(2026, 1, 1)
FEB_1 = ms_from_civil(2026, 2, 1)


def _declining_subscription(bk: Billkeep, tenant: str) -> tuple[str, str]:
    plan = create_plan(bk, tenant, "p", [{"type": "flat", "amount": 4200}])
    customer = create_customer(bk, tenant, payment_method="pm_card_chargeDeclined")
    return customer, create_subscription(bk, tenant, customer, plan, JAN_1)


def _status(bk: Billkeep, tenant: str, sub: str) -> str:
    return str(BillingQueries(bk.db, bk.clock).subscription(tenant, sub)["status"])


def test_declines_follow_the_schedule_then_uncollectible(
    bk: Billkeep, tenant: str, clock: ManualClock, gateway: FakeGateway
) -> None:
    customer, sub = _declining_subscription(bk, tenant)
    clock.set(FEB_1)
    first = run_billing_cycle(bk, FEB_1, tenant_id=tenant)
    assert (first.charges_attempted, first.charges_failed) == (1, 1)
    [invoice] = invoice_rows(bk, tenant)
    assert (invoice.status, invoice.next_attempt_at_ms) == ("open", FEB_1 + DAY_MS)
    assert _status(bk, tenant, sub) == "past_due"
    # Nothing happens before the retry is due, however often runs repeat.
    clock.set(FEB_1 + DAY_MS - 1)
    assert run_billing_cycle(bk, clock.now_ms(), tenant_id=tenant).charges_attempted == 0
    expected_next = [FEB_1 + DAY_MS + 3 * DAY_MS, FEB_1 + 4 * DAY_MS + 5 * DAY_MS, None]
    for due_ms, following in zip(
        [FEB_1 + DAY_MS, FEB_1 + 4 * DAY_MS, FEB_1 + 9 * DAY_MS], expected_next, strict=True
    ):
        clock.set(due_ms)
        assert run_billing_cycle(bk, due_ms, tenant_id=tenant).charges_attempted == 1
        [invoice] = invoice_rows(bk, tenant)
        assert invoice.next_attempt_at_ms == following
    assert invoice.status == "uncollectible" and invoice.attempt_count == 4
    clock.set(FEB_1 + 60 * DAY_MS)
    assert run_billing_cycle(bk, FEB_1 + 20 * DAY_MS, tenant_id=tenant).charges_attempted == 0
    view = BillingQueries(bk.db, bk.clock).invoice(tenant, invoice.id)
    assert [a["status"] for a in view["attempts"]] == ["failed"] * 4
    assert view["next_attempt_at"] is None
    assert gateway.payment_count() == 4  # one payment per attempt, all declined
    assert ledger_totals(bk, tenant)[f"customer_receivable:{customer}"] == 4200  # still owed
    with bk.db.read() as conn:
        keys = (
            conn.execute(
                sa.text(
                    "SELECT business_key FROM commands WHERE tenant_id = :t"
                    " AND business_key IS NOT NULL ORDER BY business_key"
                ),
                {"t": tenant},
            )
            .scalars()
            .all()
        )
    assert keys == [f"invoice:{invoice.id}:attempt:{n}" for n in (1, 2, 3, 4)]


def test_retry_after_a_new_card_pays_and_reactivates(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    customer, sub = _declining_subscription(bk, tenant)
    clock.set(FEB_1)
    run_billing_cycle(bk, FEB_1, tenant_id=tenant)
    assert _status(bk, tenant, sub) == "past_due"
    with bk.db.write() as conn:  # the customer updates their card
        conn.execute(
            customers.update()
            .where(customers.c.tenant_id == tenant, customers.c.id == customer)
            .values(payment_method="pm_card_visa")
        )
    clock.set(FEB_1 + DAY_MS)
    retry = run_billing_cycle(bk, clock.now_ms(), tenant_id=tenant)
    assert (retry.charges_attempted, retry.charges_succeeded) == (1, 1)
    [invoice] = invoice_rows(bk, tenant)
    assert (invoice.status, invoice.amount_paid_minor, invoice.attempt_count) == ("paid", 4200, 2)
    assert _status(bk, tenant, sub) == "active"
    with bk.db.read() as conn:
        succeeded = conn.execute(
            sa.select(sa.func.count()).where(
                charges.c.tenant_id == tenant,
                charges.c.invoice_id == invoice.id,
                charges.c.status == "succeeded",
            )
        ).scalar_one()
    assert succeeded == 1
    assert ledger_totals(bk, tenant)[f"customer_receivable:{customer}"] == 0


def test_custom_schedule_is_honoured(bk: Billkeep, tenant: str, clock: ManualClock) -> None:
    _, _sub = _declining_subscription(bk, tenant)
    config = BillingConfig(dunning_delays_ms=(2 * DAY_MS,))
    clock.set(FEB_1)
    run_billing_cycle(bk, FEB_1, config, tenant_id=tenant)
    assert invoice_rows(bk, tenant)[0].next_attempt_at_ms == FEB_1 + 2 * DAY_MS
    clock.set(FEB_1 + 2 * DAY_MS)
    run_billing_cycle(bk, clock.now_ms(), config, tenant_id=tenant)
    [invoice] = invoice_rows(bk, tenant)
    assert (invoice.status, invoice.attempt_count) == ("uncollectible", 2)
    assert iso(FEB_1)  # the helper stays importable for readers adapting this test


def test_a_cycle_records_who_ran_its_charges(
    bk: Billkeep, tenant: str, clock: ManualClock, gateway: FakeGateway
) -> None:
    """The charge commands a billing cycle runs name the cycle's actor in their history (a run
    resumed by a worker names that worker), not a host/pid default."""
    _declining_subscription(bk, tenant)
    clock.set(FEB_1)
    run_billing_cycle(bk, FEB_1, tenant_id=tenant, actor="billing-cycle-7")
    with bk.db.read() as conn:
        actors = set(
            conn.execute(
                sa.text(
                    "SELECT t.actor FROM command_transitions t JOIN commands c"
                    " ON c.tenant_id = t.tenant_id AND c.id = t.command_id"
                    " WHERE c.tenant_id = :t AND c.business_key IS NOT NULL"
                ),
                {"t": tenant},
            )
            .scalars()
            .all()
        )
    assert actors == {"billing-cycle-7"}
