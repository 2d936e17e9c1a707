"""A billing run whose read of due subscriptions is stale (an old snapshot, a replica, a lost row
lock) sees a period as due that another run already invoiced: the invoice-period unique
constraint must make it "already invoiced", with no error and no second invoice."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.billing.helpers import (
    create_customer,
    create_plan,
    create_subscription,
    invoice_rows,
)

from billkeep.billing import invoicing
from billkeep.billing.runs import run_billing_cycle
from billkeep.domain.clock import ManualClock
from billkeep.domain.periods import ms_from_civil
from billkeep.engine.service import Billkeep
from billkeep.storage.tables.billing import invoice_lines, subscriptions
from billkeep.storage.tables.core import journal_entries

JAN_1 = ms_from_civil(2026, 1, 1)
FEB_1 = ms_from_civil(2026, 2, 1)
MAR_1 = ms_from_civil(2026, 3, 1)


@pytest.mark.parametrize("as_of_ms", [FEB_1, MAR_1], ids=["one_due_period", "catching_up"])
def test_a_stale_read_of_due_subscriptions_invoices_nothing_twice(
    bk: Billkeep, tenant: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, as_of_ms: int
) -> None:
    plan = create_plan(bk, tenant, "p", [{"type": "flat", "amount": 4200}])
    customer = create_customer(bk, tenant)
    create_subscription(bk, tenant, customer, plan, JAN_1)
    with bk.db.read() as conn:  # the snapshot a stale run will read: nothing invoiced yet
        snapshot = list(conn.execute(sa.select(subscriptions)).all())
    clock.set(as_of_ms)
    first = run_billing_cycle(bk, as_of_ms, tenant_id=tenant)
    assert first.invoices_created == (1 if as_of_ms == FEB_1 else 2)
    before = [(i.id, i.period_index, i.status) for i in invoice_rows(bk, tenant)]

    real = invoicing._due_subscriptions
    reads: list[int] = []

    def stale_once(conn: Any, as_of: int, tenant_id: str | None, limit: int) -> list[Any]:
        reads.append(as_of)
        return snapshot if len(reads) == 1 else real(conn, as_of, tenant_id, limit)

    monkeypatch.setattr(invoicing, "_due_subscriptions", stale_once)
    stale = run_billing_cycle(bk, as_of_ms, tenant_id=tenant)
    assert len(reads) >= 2, "the stale read happened, then a fresh one"
    assert stale.invoices_created == 0
    assert stale.subscriptions_failed == 0
    assert [(i.id, i.period_index, i.status) for i in invoice_rows(bk, tenant)] == before
    with bk.db.read() as conn:  # nothing issued, priced or claimed for a phantom invoice
        issued = conn.execute(
            sa.select(sa.func.count())
            .select_from(journal_entries)
            .where(journal_entries.c.entry_key.like("invoice:%"))
        ).scalar_one()
        line_invoices = set(conn.execute(sa.select(invoice_lines.c.invoice_id)).scalars())
    assert issued == len(before)
    assert line_invoices == {invoice_id for invoice_id, _index, _status in before}
