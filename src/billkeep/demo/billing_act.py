"""Act 2: a simulated quarter of subscription billing against the same gateway.

A second Billkeep over the same database, with a ManualClock, so months pass in seconds, and its
own tenant. A few hundred subscriptions on three plans (flat + per_unit, flat + graduated, graduated
only) send usage in batches with ~5% duplicates and some late events (for a month already
invoiced). At each month end two billing runs overlap (two threads) and a third repeats them;
the following days the clock advances and dunning retries declined invoices. Some customers fix
their card after a decline (the demo stands in for the customer: billkeep has no card update), so
invoices end paid, open or uncollectible.

Every number reported is computed afterwards from the database and the gateway's own records.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from billkeep.billing.config import DAY_MS, BillingConfig
from billkeep.billing.runs import run_billing_cycle
from billkeep.billing.usage_ingest import ingest_usage_events
from billkeep.domain.clock import ManualClock, ms_to_rfc3339
from billkeep.domain.periods import ms_from_civil
from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.engine.worker import RecoveryWorker
from billkeep.gateways.protocol import GatewayDirectory
from billkeep.storage.database import Database
from billkeep.storage.tables.billing import invoice_lines, invoices, subscriptions, usage_events
from billkeep.storage.tables.core import commands, customers

__all__ = [
    "BillingActHooks",
    "BillingQuarter",
    "BillingQuarterReport",
    "run_billing_quarter",
]

HOUR_MS = 3_600_000
BATCH_EVENTS = 1000
# Final settling: rounds of (settle async payments, recover commands, run a cycle).
MAX_SETTLE_ROUNDS = 20
CARD_FIX_SHARE = 0.5
# Billing runs started at once at each month end (threads: their gateway calls overlap).
OVERLAPPING_RUNS = 3
SETUP_THREADS = 4  # of the declining customers, this share fixes the card after a decline

PAYMENT_METHODS = (
    ("pm_card_visa", 84),
    ("pm_card_chargeDeclined", 8),
    ("pm_card_chargeDeclinedInsufficientFunds", 4),
    ("pm_card_async", 4),
)

METRICS: tuple[dict[str, Any], ...] = (
    {"code": "api_calls", "name": "API calls", "aggregation": "count"},
    {"code": "storage_gb", "name": "Storage (GB)", "aggregation": "sum", "property": "gb"},
)
PLANS: tuple[dict[str, Any], ...] = (
    {
        "code": "starter",
        "name": "Starter",
        "currency": "usd",
        "interval": "month",
        "prices": [
            {"type": "flat", "amount": 900, "description": "Starter base"},
            {"type": "per_unit", "metric": "api_calls", "unit_amount": 25},
        ],
    },
    {
        "code": "growth",
        "name": "Growth",
        "currency": "usd",
        "interval": "month",
        "prices": [
            {"type": "flat", "amount": 4900, "description": "Growth base"},
            {
                "type": "graduated",
                "metric": "storage_gb",
                "tiers": [
                    {"up_to": 20, "unit_amount": 100},
                    {"up_to": None, "unit_amount": 60},
                ],
            },
        ],
    },
    {
        "code": "metered",
        "name": "Pay as you go",
        "currency": "usd",
        "interval": "month",
        "prices": [
            {
                "type": "graduated",
                "metric": "api_calls",
                "tiers": [{"up_to": 5, "unit_amount": 0}, {"up_to": None, "unit_amount": 40}],
            }
        ],
    },
)
PLAN_METRIC = {"starter": "api_calls", "growth": "storage_gb", "metered": "api_calls"}

# Time is compressed: unknown outcomes are re-asked soon (in manual-clock time).
ACT_ENGINE_CONFIG = EngineConfig(
    lease_ms=2_000, resolve_backoff_ms=(100, 200, 400), error_retry_ms=100, wait_poll_ms=20
)


@dataclass(frozen=True)
class BillingQuarter:
    subscriptions: int = 200
    months: int = 3
    max_events_per_month: int = 8  # per subscription, uniformly 0..max
    duplicate_share: float = 0.05
    late_events_per_month: int = 30
    seed: int = 7
    start_year: int = 2027


@dataclass(frozen=True)
class BillingActHooks:
    """What the act needs from the gateway's side: faults on/off, settling asynchronous payments
    (as a bank would, later) and the gateway's own count of succeeded payments per command."""

    set_faults: Callable[[], object]
    clear_faults: Callable[[], object]
    settle_async: Callable[[], object]
    succeeded_by_command: Callable[[], dict[str, int]]


@dataclass
class BillingQuarterReport:
    subscriptions: int = 0
    months: int = 0
    billing_runs: int = 0
    events_sent: int = 0
    events_accepted: int = 0
    duplicates_sent: int = 0
    duplicates_reported: int = 0
    rejected: int = 0
    events_stored: int = 0
    events_unbilled: int = 0
    events_misbilled: int = 0
    late_sent: int = 0
    late_billed_as_adjustment: int = 0
    adjustment_lines: int = 0
    quantity_mismatches: int = 0
    invoices_created: int = 0
    invoices_expected: int = 0
    max_invoices_per_period: int = 0
    invoices_by_status: dict[str, int] = field(default_factory=dict)
    subscriptions_by_status: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    max_payments_per_invoice: int = 0
    paid_without_one_payment: int = 0
    unpaid_with_payment: int = 0
    pending_attempts: int = 0
    trial_balance: list[dict[str, object]] = field(default_factory=list)
    revenue_minor: int = 0
    invoiced_minor: int = 0

    def failures(self) -> list[str]:
        """The exactly-once checks that failed (empty: all held)."""
        checks = {
            "one invoice per (subscription, period)": self.max_invoices_per_period == 1,
            "every period invoiced": self.invoices_created == self.invoices_expected,
            "duplicates acknowledged, not stored": self.duplicates_reported == self.duplicates_sent
            and self.events_stored == self.events_sent - self.duplicates_sent,
            "no event rejected": self.rejected == 0,
            "every event billed by exactly one invoice": self.events_unbilled == 0
            and self.events_misbilled == 0,
            "late events billed once as adjustments": self.late_billed_as_adjustment
            == self.late_sent,
            "billed quantities equal the usage sent": self.quantity_mismatches == 0,
            "at most one payment per invoice": self.max_payments_per_invoice <= 1,
            "paid invoices have exactly one payment": self.paid_without_one_payment == 0,
            "unpaid invoices have no payment": self.unpaid_with_payment == 0,
            "no attempt left pending": self.pending_attempts == 0,
            "revenue equals invoiced totals": self.revenue_minor == self.invoiced_minor,
            "ledger balanced": all(
                line["debits"] == line["credits"] for line in self.trial_balance
            ),
        }
        return [name for name, ok in checks.items() if not ok]


@dataclass
class _Sent:
    """The usage the act sent (unique events), to check the invoices against."""

    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    late_ids: set[str] = field(default_factory=set)


class _Quarter:
    def __init__(
        self,
        bk: Billkeep,
        clock: ManualClock,
        tenant_id: str,
        plan: BillingQuarter,
        hooks: BillingActHooks,
    ) -> None:
        self.bk, self.clock, self.tenant_id = bk, clock, tenant_id
        self.plan, self.hooks = plan, hooks
        self.rng = random.Random(plan.seed)
        self.report = BillingQuarterReport(subscriptions=plan.subscriptions, months=plan.months)
        self.sent = _Sent()
        self.config = BillingConfig()
        self.worker = RecoveryWorker(bk, actor="demo-billing-worker")
        self.subs: list[tuple[str, str, str]] = []  # (subscription, customer, plan code)
        self.declining: list[str] = []
        self._keys = 0

    # --- setup ---------------------------------------------------------------------------------

    def _key(self, prefix: str) -> str:
        self._keys += 1
        return f"demo-billing-{prefix}-{self._keys}"

    def _create(self, operation: str, body: dict[str, Any]) -> str:
        result = self.bk.execute(
            self.tenant_id, operation, body, idempotency_key=self._key(operation)
        )
        assert result.status == 201, result.body_text
        return str(result.body()["id"])

    def setup(self, start_ms: int) -> None:
        for metric in METRICS:
            self._create("metric.create", metric)
        plan_ids = {p["code"]: self._create("plan.create", p) for p in PLANS}
        methods = [m for m, _ in PAYMENT_METHODS]
        weights = [w for _, w in PAYMENT_METHODS]
        start_at = ms_to_rfc3339(start_ms)
        chosen = [self.rng.choices(methods, weights)[0] for _ in range(self.plan.subscriptions)]

        def subscribe(index: int) -> tuple[str, str, str]:
            customer = self.bk.execute(
                self.tenant_id,
                "customer.create",
                {"email": f"subscriber{index}@example.com", "payment_method": chosen[index]},
                idempotency_key=f"demo-billing-customer-{index}",
            )
            assert customer.status == 201, customer.body_text
            customer_id = str(customer.body()["id"])
            code = str(PLANS[index % len(PLANS)]["code"])
            sub = self.bk.execute(
                self.tenant_id,
                "subscription.create",
                {"customer_id": customer_id, "plan_id": plan_ids[code], "start_at": start_at},
                idempotency_key=f"demo-billing-subscription-{index}",
            )
            assert sub.status == 201, sub.body_text
            return str(sub.body()["id"]), customer_id, code

        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            self.subs = list(pool.map(subscribe, range(self.plan.subscriptions)))
        self.declining = [
            customer
            for (_sub, customer, _code), method in zip(self.subs, chosen, strict=True)
            if method == "pm_card_chargeDeclined"
        ]

    # --- usage -----------------------------------------------------------------------------------

    def _event(self, sub: str, code: str, at_ms: int) -> dict[str, Any]:
        metric = PLAN_METRIC[code]
        properties = {"gb": self.rng.randint(1, 9)} if metric == "storage_gb" else {}
        event_id = f"evt-{len(self.sent.by_id)}-{self.rng.randrange(1 << 30):x}"
        event = {
            "event_id": event_id,
            "subscription_id": sub,
            "metric": metric,
            "timestamp": ms_to_rfc3339(at_ms),
            "properties": properties,
        }
        self.sent.by_id[event_id] = event
        return event

    def _send(self, events: list[dict[str, Any]]) -> None:
        """Send in batches; each batch also repeats ~5% of already-sent events (client retries)."""
        for chunk in range(0, len(events), BATCH_EVENTS):
            batch = events[chunk : chunk + BATCH_EVENTS]
            pool = list(self.sent.by_id.values())
            repeats = [
                dict(self.rng.choice(pool))
                for _ in range(int(len(batch) * self.plan.duplicate_share))
            ]
            body = batch + repeats
            self.rng.shuffle(body)
            result = ingest_usage_events(
                self.bk.db, self.tenant_id, {"events": body}, self.clock.now_ms()
            )
            self.report.events_sent += len(body)
            self.report.duplicates_sent += len(repeats)
            self.report.events_accepted += result.accepted
            self.report.duplicates_reported += result.duplicates
            self.report.rejected += len(result.rejected)

    def usage_between(self, start_ms: int, end_ms: int) -> None:
        """Usage of every subscription timestamped in [start_ms, end_ms), sent now."""
        events = []
        for sub, _customer, code in self.subs:
            for _ in range(self.rng.randint(0, self.plan.max_events_per_month // 2)):
                events.append(self._event(sub, code, self.rng.randrange(start_ms, end_ms)))
        self._send(events)

    def late_usage(self, start_ms: int, end_ms: int) -> None:
        """Events of an already invoiced period arriving now: billed next time, as adjustments."""
        events = []
        for sub, _customer, code in self.rng.sample(
            self.subs, min(len(self.subs), self.plan.late_events_per_month)
        ):
            event = self._event(sub, code, self.rng.randrange(start_ms, end_ms))
            self.sent.late_ids.add(event["event_id"])
            events.append(event)
        self.report.late_sent += len(events)
        self._send(events)

    # --- runs ------------------------------------------------------------------------------------

    def _cycle(self) -> None:
        run_billing_cycle(self.bk, self.clock.now_ms(), self.config, tenant_id=self.tenant_id)
        self.report.billing_runs += 1

    def overlapping_runs(self) -> None:
        """Runs at once (threads), then one more: each period must still be invoiced once."""
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self._cycle()
            except BaseException as exc:  # surfaced below: a failed run fails the demo
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(OVERLAPPING_RUNS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        self._cycle()

    def dunning_days(self, fix_cards: bool) -> None:
        """Advance to each time a retry falls due (the dunning schedule after the month-end
        attempt, an hour late), recovering commands and settling async payments first, then run
        a cycle: the attempts of the previous cycle were made at the clock's time."""
        for step, delay_ms in enumerate(self.config.dunning_delays_ms):
            self.clock.advance(delay_ms + HOUR_MS)
            self.hooks.settle_async()
            self.worker.drain()
            self._cycle()
            if fix_cards and step == 0:
                self._fix_some_cards()

    def _fix_some_cards(self) -> None:
        """Half the declining customers update their card (billkeep has no customer update
        operation; the demo plays the customer and writes the new default directly)."""
        fixed = self.declining[: int(len(self.declining) * CARD_FIX_SHARE)]
        if not fixed:
            return
        with self.bk.db.write() as conn:
            conn.execute(
                customers.update()
                .where(customers.c.tenant_id == self.tenant_id, customers.c.id.in_(fixed))
                .values(payment_method="pm_card_visa")
            )

    def settle(self) -> None:
        """Faults off: settle async payments and recover commands until no attempt is pending."""
        self.hooks.clear_faults()
        for _ in range(MAX_SETTLE_ROUNDS):
            self.hooks.settle_async()
            self.worker.drain()
            self.clock.advance(self.config.charge_lease_ms + 1_000)
            self._cycle()
            if _pending_attempts(self.bk, self.tenant_id) == 0:
                return


def _pending_attempts(bk: Billkeep, tenant_id: str) -> int:
    from billkeep.storage.tables.billing import invoice_attempts

    return int(
        bk.db.run_read(
            lambda c: c.execute(
                sa.select(sa.func.count())
                .select_from(invoice_attempts)
                .where(
                    invoice_attempts.c.tenant_id == tenant_id,
                    invoice_attempts.c.status == "pending",
                )
            ).scalar_one()
        )
    )


def _month_start(year: int, month_offset: int) -> int:
    years, month = divmod(month_offset, 12)
    return ms_from_civil(year + years, month + 1, 1)


def run_billing_quarter(
    database_url: str,
    gateways: GatewayDirectory,
    plan: BillingQuarter,
    hooks: BillingActHooks,
    on_step: Callable[[str], None] = lambda _s: None,
) -> BillingQuarterReport:
    start_ms = _month_start(plan.start_year, 0)
    clock = ManualClock(start_ms)
    bk = Billkeep(Database(database_url), gateways, clock=clock, config=ACT_ENGINE_CONFIG)
    try:
        tenant_id, _key = bk.tenants.create_tenant("demo-billing", clock.now_ms())
        quarter = _Quarter(bk, clock, tenant_id, plan, hooks)
        on_step(f"creating {plan.subscriptions} subscriptions")
        quarter.setup(start_ms)
        hooks.set_faults()
        for month in range(plan.months):
            month_start, month_end = (
                _month_start(plan.start_year, month),
                _month_start(plan.start_year, month + 1),
            )
            on_step(f"month {month + 1}: usage")
            middle = month_start + 15 * DAY_MS
            clock.set(max(clock.now_ms(), middle))
            quarter.usage_between(month_start, middle)
            if month > 0:
                quarter.late_usage(_month_start(plan.start_year, month - 1), month_start)
            clock.set(month_end - HOUR_MS)
            quarter.usage_between(middle, month_end - HOUR_MS)
            clock.set(month_end + HOUR_MS)
            on_step(f"month {month + 1}: billing runs and dunning")
            quarter.overlapping_runs()
            quarter.dunning_days(fix_cards=month == 0)
        on_step("settling")
        quarter.settle()
        audit(bk, tenant_id, quarter.sent, quarter.report, hooks.succeeded_by_command())
        return quarter.report
    finally:
        bk.close()


# --- audit ---------------------------------------------------------------------------------------


def audit(
    bk: Billkeep,
    tenant_id: str,
    sent: _Sent,
    report: BillingQuarterReport,
    paid_by_command: dict[str, int],
) -> None:
    with bk.db.read() as conn:
        _audit_invoices(conn, tenant_id, report)
        _audit_usage(conn, tenant_id, sent, report)
        _audit_payments(conn, tenant_id, report, paid_by_command)
    report.trial_balance = bk.queries.trial_balance(tenant_id)["currencies"]
    report.pending_attempts = _pending_attempts(bk, tenant_id)


def _audit_invoices(conn: sa.Connection, tenant_id: str, report: BillingQuarterReport) -> None:
    rows = conn.execute(
        sa.select(invoices.c.subscription_id, invoices.c.period_start_ms, invoices.c.status,
                  invoices.c.total_minor)
        .where(invoices.c.tenant_id == tenant_id)
    ).all()  # fmt: skip
    per_period = Counter((r.subscription_id, r.period_start_ms) for r in rows)
    report.invoices_created = len(rows)
    report.invoices_expected = report.subscriptions * report.months
    report.max_invoices_per_period = max(per_period.values(), default=0)
    report.invoices_by_status = dict(Counter(str(r.status) for r in rows))
    report.invoiced_minor = sum(int(r.total_minor) for r in rows)
    subs = conn.execute(
        sa.select(subscriptions.c.status).where(subscriptions.c.tenant_id == tenant_id)
    ).scalars()
    report.subscriptions_by_status = dict(Counter(str(s) for s in subs))
    from billkeep.storage.tables.core import accounts

    revenue = conn.execute(
        sa.select(accounts.c.credits_posted, accounts.c.debits_posted).where(
            accounts.c.tenant_id == tenant_id, accounts.c.code == "revenue:sales"
        )
    ).all()
    report.revenue_minor = sum(int(r.credits_posted) - int(r.debits_posted) for r in revenue)


def _audit_usage(
    conn: sa.Connection, tenant_id: str, sent: _Sent, report: BillingQuarterReport
) -> None:
    events = conn.execute(
        sa.select(usage_events.c.event_id, usage_events.c.timestamp_ms,
                  usage_events.c.metric, usage_events.c.subscription_id,
                  invoices.c.id.label("invoice_id"), invoices.c.subscription_id.label("inv_sub"),
                  invoices.c.period_start_ms, invoices.c.period_end_ms)
        .select_from(usage_events.outerjoin(invoices, sa.and_(
            invoices.c.tenant_id == usage_events.c.tenant_id,
            invoices.c.id == usage_events.c.invoice_id)))
        .where(usage_events.c.tenant_id == tenant_id)
    ).all()  # fmt: skip
    adjustments = {
        (r.invoice_id, r.metric)
        for r in conn.execute(
            sa.select(invoice_lines.c.invoice_id, invoice_lines.c.metric).where(
                invoice_lines.c.tenant_id == tenant_id, invoice_lines.c.kind == "adjustment"
            )
        )
    }
    report.adjustment_lines = len(adjustments)
    report.events_stored = len(events)
    # Billed usage per (invoice, metric) counted by the in-period events the invoice claimed.
    expected_quantity: Counter[tuple[str, str]] = Counter()
    for e in events:
        if e.invoice_id is None:
            report.events_unbilled += 1
            continue
        in_period = e.period_start_ms <= e.timestamp_ms < e.period_end_ms
        late = e.timestamp_ms < e.period_start_ms
        if e.inv_sub != e.subscription_id or not (in_period or late):
            report.events_misbilled += 1
            continue
        if late:
            if e.event_id in sent.late_ids and (e.invoice_id, e.metric) in adjustments:
                report.late_billed_as_adjustment += 1
            continue
        properties = sent.by_id[e.event_id]["properties"]
        expected_quantity[(e.invoice_id, e.metric)] += int(properties.get("gb", 1))
    billed_quantity: Counter[tuple[str, str]] = Counter()
    for line in conn.execute(
        sa.select(
            invoice_lines.c.invoice_id, invoice_lines.c.metric, invoice_lines.c.quantity
        ).where(
            invoice_lines.c.tenant_id == tenant_id,
            invoice_lines.c.kind == "price",
            invoice_lines.c.metric.is_not(None),
        )
    ):
        billed_quantity[(line.invoice_id, line.metric)] += int(line.quantity)
    keys = set(expected_quantity) | {k for k, v in billed_quantity.items() if v}
    report.quantity_mismatches = sum(1 for k in keys if expected_quantity[k] != billed_quantity[k])


def _audit_payments(
    conn: sa.Connection,
    tenant_id: str,
    report: BillingQuarterReport,
    paid_by_command: dict[str, int],
) -> None:
    attempts = conn.execute(
        sa.select(commands.c.id, commands.c.business_key).where(
            commands.c.tenant_id == tenant_id, commands.c.business_key.like("invoice:%")
        )
    ).all()
    report.attempts = len(attempts)
    payments: defaultdict[str, int] = defaultdict(int)
    for command_id, business_key in attempts:
        invoice_id = str(business_key).split(":")[1]
        payments[invoice_id] += paid_by_command.get(str(command_id), 0)
    report.max_payments_per_invoice = max(payments.values(), default=0)
    for row in conn.execute(
        sa.select(invoices.c.id, invoices.c.status, invoices.c.total_minor).where(
            invoices.c.tenant_id == tenant_id
        )
    ):
        count = payments.get(row.id, 0)
        if row.status == "paid" and row.total_minor > 0 and count != 1:
            report.paid_without_one_payment += 1
        if row.status != "paid" and count > 0:
            report.unpaid_with_payment += 1
