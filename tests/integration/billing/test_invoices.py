"""Invoices from real usage, on both engines: every price type, trials, cancellation, late usage,
previews and repeated runs."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.billing.helpers import (
    create_customer,
    create_metric,
    create_plan,
    create_subscription,
    ingest,
    invoice_rows,
    iso,
    ledger_totals,
    lines_of,
)

from billkeep.billing.runs import run_billing_cycle
from billkeep.domain.clock import ManualClock
from billkeep.domain.periods import MS_PER_DAY, ms_from_civil
from billkeep.engine.service import Billkeep
from billkeep.storage.tables.billing import usage_events

JAN_1 = ms_from_civil(2026, 1, 1)
FEB_1 = ms_from_civil(2026, 2, 1)
MAR_1 = ms_from_civil(2026, 3, 1)


def _event(event_id: str, sub: str, metric: str, at_ms: int, **props: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "subscription_id": sub,
        "metric": metric,
        "timestamp": iso(at_ms),
        "properties": props,
    }


def _line_tuples(bk: Billkeep, tenant: str, invoice_id: str) -> list[tuple[str, int, int, int]]:
    return [
        (ln.description, ln.quantity, ln.unit_amount_minor, ln.amount_minor)
        for ln in lines_of(bk, tenant, invoice_id)
    ]


def test_every_price_type_is_invoiced_with_exact_lines_and_total(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    create_metric(bk, tenant, "units", "sum", "units")
    create_metric(bk, tenant, "requests", "count", None)
    create_metric(bk, tenant, "seats", "max", "seats")
    create_metric(bk, tenant, "users", "unique_count", "user")
    plan = create_plan(
        bk,
        tenant,
        "everything",
        [
            {"type": "flat", "amount": 1000, "description": "Base"},
            {"type": "per_unit", "metric": "units", "unit_amount": 3},
            {
                "type": "graduated",
                "metric": "requests",
                "tiers": [
                    {"up_to": 2, "unit_amount": 100},
                    {"up_to": None, "unit_amount": 50, "flat_amount": 10},
                ],
            },
            {
                "type": "volume",
                "metric": "seats",
                "tiers": [{"up_to": 5, "unit_amount": 200}, {"up_to": None, "unit_amount": 150}],
            },
            {"type": "package", "metric": "users", "package_size": 2, "package_amount": 500},
        ],
    )
    customer = create_customer(bk, tenant)
    sub = create_subscription(bk, tenant, customer, plan, JAN_1)
    day = JAN_1 + MS_PER_DAY
    clock.set(day + 1000)
    result = ingest(
        bk,
        tenant,
        [
            _event("u1", sub, "units", day, units=5),
            _event("u2", sub, "units", day, units=7),
            _event("r1", sub, "requests", day),
            _event("r2", sub, "requests", day),
            _event("r3", sub, "requests", day),
            _event("s1", sub, "seats", day, seats=4),
            _event("s2", sub, "seats", day, seats=6),
            _event("a1", sub, "users", day, user="a"),
            _event("a2", sub, "users", day, user="b"),
            _event("a3", sub, "users", day, user="c"),
            _event("a4", sub, "users", day, user="a"),
        ],
    )
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (11, 0, [])
    clock.set(FEB_1)
    run = run_billing_cycle(bk, FEB_1, tenant_id=tenant)
    assert (run.invoices_created, run.charges_attempted, run.charges_succeeded) == (1, 1, 1)
    [invoice] = invoice_rows(bk, tenant)
    assert _line_tuples(bk, tenant, invoice.id) == [
        ("Base", 1, 1000, 1000),
        ("units", 12, 3, 36),
        ("requests tier 1 (1-2)", 2, 100, 200),
        ("requests tier 2 (3+)", 1, 50, 50),
        ("requests tier 2 (3+) flat fee", 1, 10, 10),
        ("seats tier 2 (6+)", 6, 150, 900),
        ("users (3 units in packages of 2)", 2, 500, 1000),
    ]
    assert invoice.total_minor == 3196
    assert (invoice.status, invoice.amount_paid_minor) == ("paid", 3196)
    assert (invoice.period_start_ms, invoice.period_end_ms) == (JAN_1, FEB_1)
    balances = ledger_totals(bk, tenant)
    assert balances[f"customer_receivable:{customer}"] == 0  # issued, then paid
    assert balances["revenue:sales"] == -3196
    assert sum(balances.values()) == 0  # debits equal credits
    with bk.db.read() as conn:
        unclaimed = conn.execute(
            sa.select(sa.func.count()).where(
                usage_events.c.tenant_id == tenant, usage_events.c.invoice_id.is_(None)
            )
        ).scalar_one()
    assert unclaimed == 0


def test_trial_is_never_invoiced_and_usage_in_it_is_free(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    create_metric(bk, tenant, "units")
    plan = create_plan(
        bk,
        tenant,
        "trial",
        [
            {"type": "flat", "amount": 500},
            {"type": "per_unit", "metric": "units", "unit_amount": 1},
        ],
        trial_days=14,
    )
    customer = create_customer(bk, tenant)
    sub = create_subscription(bk, tenant, customer, plan, JAN_1)
    trial_end = JAN_1 + 14 * MS_PER_DAY
    clock.set(trial_end + 2 * MS_PER_DAY)
    ingest(
        bk,
        tenant,
        [
            _event("trial", sub, "units", JAN_1 + MS_PER_DAY, units=100),
            _event("paid", sub, "units", trial_end + MS_PER_DAY, units=7),
        ],
    )
    clock.set(trial_end + 20 * MS_PER_DAY)
    assert run_billing_cycle(bk, clock.now_ms(), tenant_id=tenant).invoices_created == 0
    clock.set(ms_from_civil(2026, 2, 15))
    assert run_billing_cycle(bk, clock.now_ms(), tenant_id=tenant).invoices_created == 1
    [invoice] = invoice_rows(bk, tenant)
    assert (invoice.period_start_ms, invoice.period_end_ms) == (
        trial_end,
        ms_from_civil(2026, 2, 15),
    )
    assert invoice.total_minor == 507  # the 100 trial units are free


def test_late_event_is_billed_once_as_an_adjustment_on_the_next_invoice(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    create_metric(bk, tenant, "units")
    plan = create_plan(
        bk,
        tenant,
        "graduated",
        [
            {
                "type": "graduated",
                "metric": "units",
                "tiers": [{"up_to": 10, "unit_amount": 10}, {"up_to": None, "unit_amount": 1}],
            }
        ],
    )
    sub = create_subscription(bk, tenant, create_customer(bk, tenant), plan, JAN_1)
    clock.set(JAN_1 + 2 * MS_PER_DAY)
    ingest(bk, tenant, [_event("jan-1", sub, "units", JAN_1 + MS_PER_DAY, units=8)])
    clock.set(FEB_1 + 1000)
    run_billing_cycle(bk, clock.now_ms(), tenant_id=tenant)
    # January's invoice is final; a January event arrives late (and is retried).
    late = _event("jan-late", sub, "units", JAN_1 + 20 * MS_PER_DAY, units=5)
    assert ingest(bk, tenant, [late])["accepted"] == 1
    assert ingest(bk, tenant, [late])["duplicates"] == 1
    clock.set(FEB_1 + 2 * MS_PER_DAY)
    ingest(bk, tenant, [_event("feb-1", sub, "units", FEB_1 + MS_PER_DAY, units=1)])
    assert run_billing_cycle(bk, clock.now_ms(), tenant_id=tenant).invoices_created == 0
    clock.set(MAR_1)
    for _ in range(2):  # repeating the run changes nothing
        run_billing_cycle(bk, MAR_1, tenant_id=tenant)
    jan, feb = invoice_rows(bk, tenant)
    assert jan.total_minor == 80
    assert _line_tuples(bk, tenant, feb.id) == [
        ("units tier 1 (1-10)", 1, 10, 10),
        # January with the late 5 units: 10*10 + 3*1 = 103, billed 80 before: +23.
        ("Late usage: units for 2026-01-01..2026-02-01 (+5 units)", 1, 23, 23),
    ]
    assert feb.total_minor == 33
    with bk.db.read() as conn:
        # A comprehension, not dict(result): a Result has keys(), so dict() would index it.
        owners = {
            str(row.event_id): str(row.invoice_id)
            for row in conn.execute(
                sa.select(usage_events.c.event_id, usage_events.c.invoice_id).where(
                    usage_events.c.tenant_id == tenant
                )
            )
        }
    assert owners == {"jan-1": jan.id, "jan-late": feb.id, "feb-1": feb.id}


def test_cancel_now_bills_usage_of_the_truncated_period_only(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    create_metric(bk, tenant, "units")
    plan = create_plan(
        bk,
        tenant,
        "p",
        [
            {"type": "flat", "amount": 900},
            {"type": "per_unit", "metric": "units", "unit_amount": 2},
        ],
    )
    sub = create_subscription(bk, tenant, create_customer(bk, tenant), plan, JAN_1)
    clock.set(JAN_1 + 10 * MS_PER_DAY)
    ingest(bk, tenant, [_event("e1", sub, "units", JAN_1 + MS_PER_DAY, units=4)])
    canceled = bk.execute(
        tenant,
        "subscription.cancel",
        {"subscription_id": sub, "at_period_end": False},
        idempotency_key="cancel-1",
    )
    assert canceled.status == 200 and canceled.body()["status"] == "canceled"
    again = bk.execute(
        tenant, "subscription.cancel", {"subscription_id": sub}, idempotency_key="cancel-2"
    )
    assert again.status == 409 and again.body()["code"] == "subscription_canceled"
    # Usage after the end is never billed.
    ingest(bk, tenant, [_event("after", sub, "units", clock.now_ms() + 1000, units=50)])
    clock.set(MAR_1)
    run_billing_cycle(bk, MAR_1, tenant_id=tenant)
    [invoice] = invoice_rows(bk, tenant)
    assert invoice.period_end_ms == JAN_1 + 10 * MS_PER_DAY
    assert _line_tuples(bk, tenant, invoice.id) == [("units", 4, 2, 8)]


def test_cancel_at_period_end_bills_the_last_full_period(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    plan = create_plan(bk, tenant, "flat", [{"type": "flat", "amount": 700}])
    sub = create_subscription(bk, tenant, create_customer(bk, tenant), plan, JAN_1)
    clock.set(JAN_1 + 5 * MS_PER_DAY)
    result = bk.execute(
        tenant,
        "subscription.cancel",
        {"subscription_id": sub, "at_period_end": True},
        idempotency_key="c",
    )
    body = result.body()
    assert (body["status"], body["cancel_at_period_end"]) == ("active", True)
    assert body["ended_at"] == iso(FEB_1)
    clock.set(ms_from_civil(2026, 6, 1))
    run_billing_cycle(bk, clock.now_ms(), tenant_id=tenant)
    assert [(i.period_start_ms, i.total_minor) for i in invoice_rows(bk, tenant)] == [(JAN_1, 700)]


def test_upcoming_invoice_previews_what_the_run_then_bills(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    from billkeep.billing.queries import BillingQueries

    create_metric(bk, tenant, "units")
    plan = create_plan(
        bk,
        tenant,
        "p",
        [
            {"type": "flat", "amount": 100},
            {"type": "per_unit", "metric": "units", "unit_amount": 5},
        ],
    )
    sub = create_subscription(bk, tenant, create_customer(bk, tenant), plan, JAN_1)
    clock.set(JAN_1 + 2 * MS_PER_DAY)
    ingest(bk, tenant, [_event("e1", sub, "units", JAN_1 + MS_PER_DAY, units=3)])
    queries = BillingQueries(bk.db, bk.clock)
    preview = queries.upcoming_invoice(tenant, sub)
    assert (preview["total"], preview["period_end"]) == (115, iso(FEB_1))
    clock.set(FEB_1)
    run = run_billing_cycle(bk, FEB_1, tenant_id=tenant)
    [invoice] = invoice_rows(bk, tenant)
    assert invoice.total_minor == preview["total"] and run.invoices_created == 1
    view = queries.invoice(tenant, invoice.id)
    assert [(ln["description"], ln["amount"]) for ln in view["lines"]] == [
        (line["description"], line["amount"]) for line in preview["lines"]
    ]
    assert view["attempts"][0]["status"] == "succeeded" and view["status"] == "paid"
    assert queries.upcoming_invoice(tenant, sub)["period_start"] == iso(FEB_1)


def test_billing_run_command_replays_and_refuses_a_future_as_of(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    plan = create_plan(bk, tenant, "flat", [{"type": "flat", "amount": 250}])
    create_subscription(bk, tenant, create_customer(bk, tenant), plan, JAN_1)
    clock.set(MAR_1)
    first = bk.execute(tenant, "billing_run.create", {"as_of": iso(MAR_1)}, idempotency_key="r1")
    assert first.status == 201
    body = first.body()
    assert (body["invoices_created"], body["charges_succeeded"]) == (2, 2)
    replay = bk.execute(tenant, "billing_run.create", {"as_of": iso(MAR_1)}, idempotency_key="r1")
    assert replay.replayed and replay.body_text == first.body_text
    second = bk.execute(tenant, "billing_run.create", {"as_of": iso(MAR_1)}, idempotency_key="r2")
    assert (second.body()["invoices_created"], second.body()["invoices_existing"]) == (0, 2)
    future = bk.execute(
        tenant, "billing_run.create", {"as_of": iso(MAR_1 + MS_PER_DAY)}, idempotency_key="r3"
    )
    assert future.status == 422 and future.body()["code"] == "as_of_in_future"
    assert len(invoice_rows(bk, tenant)) == 2


@pytest.mark.parametrize("bad", [{"code": "x", "name": "x", "aggregation": "median"}])
def test_invalid_metric_records_nothing(bk: Billkeep, tenant: str, bad: dict[str, Any]) -> None:
    from billkeep.domain.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        bk.execute(tenant, "metric.create", bad, idempotency_key="m")


def test_plan_with_unknown_metric_is_refused_and_codes_are_unique(
    bk: Billkeep, tenant: str
) -> None:
    from billkeep.domain.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as info:
        create_plan(bk, tenant, "p", [{"type": "per_unit", "metric": "nope", "unit_amount": 1}])
    assert info.value.errors[0].field == "prices[0].metric"
    create_plan(bk, tenant, "same", [{"type": "flat", "amount": 1}])
    taken = bk.execute(
        tenant,
        "plan.create",
        {
            "code": "same",
            "name": "n",
            "currency": "usd",
            "interval": "month",
            "prices": [{"type": "flat", "amount": 2}],
        },
        idempotency_key="dup-plan",
    )
    assert taken.status == 409 and taken.body()["code"] == "plan_code_taken"
