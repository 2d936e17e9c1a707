"""The billing extension: plans and subscriptions whose periods end during the run, usage sent
with seeded faults, billing runs as commands and as the worker's cycle, dunning on the clock.

Setup (no faults), in the first tenant (the budget): a `units` metric (sum of the `units`
property), one plan (a flat fee plus a per-unit price, numbers drawn from the seed), a subscription
for two of its customers (plus, on some
seeds, an extra customer whose card always declines), started about one month ago so period 0
ends within 45 minutes; some are backdated two or three months so several periods are
due at once.

Actions (weighted, interleaved with the core workload at yield points):
- `usage_batch`: 1-5 events through `ingest_usage_events` (what `POST /v1/usage_events` runs):
  events of the open period, LATE events (timestamp in a period already invoiced), an occasional
  event too far in the future, the same id twice in one batch, the same id with another payload;
  sometimes the same batch sent again by a second client right away (concurrent duplicate);
- `usage_resend`: an earlier batch again (the client never saw the answer), sometimes with other
  payloads under the same ids (must be refused, never counted);
- `billing_run`: `billing_run.create` as a client intent (replays and liveness checked by the base
  auditor), sometimes the same key twice at once, a second overlapping run under another key, or
  the same key with another `as_of` (must be refused);
- `billing_worker_cycle`: the worker's `BillingWorkerHook`;
- `clock_billing`: 10-50 minutes pass (periods end, dunning retries come due), bounded per run.
Charges of invoices go through the engine's `charge.create`, so crash points and gateway faults
hit them like any charge. A seeded share of billing actors reads due subscriptions from an old
snapshot (`stale.py`).

Every answer to a usage batch is compared with what the client model predicts (accepted,
duplicate, or refused with the domain's code), at the moment it is answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.billing.config import BillingConfig
from billkeep.billing.operations import register_billing
from billkeep.billing.runs import BillingWorkerHook, run_billing_cycle
from billkeep.billing.usage_ingest import IngestResult, ingest_usage_events
from billkeep.domain.clock import ms_to_rfc3339
from billkeep.sim.auditor import GatewayView, Violation
from billkeep.sim.extension import SimAction, SimWorld
from billkeep.sim.extensions.billing import audit, stale
from billkeep.sim.extensions.billing.facts import (
    AcceptedEvent,
    BillingFacts,
    SimPlan,
    SimSubscription,
    month_start_ms,
)
from billkeep.sim.history import Intent, observe_call
from billkeep.storage.tables.billing import invoice_attempts, invoices, subscriptions
from billkeep.storage.tables.core import customers

__all__ = ["DUNNING_DELAYS_MS", "BillingExtension"]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
# One retry 30 min after the first decline, then uncollectible: the schedule fits in a run, far
# inside the 72 h idempotency-key retention, and costs at most 2 charges per invoice (the sweep's
# budget; the delay table's indexing is covered by tests/integration/billing/test_dunning.py).
DUNNING_DELAYS_MS = (30 * MINUTE_MS,)
BILLING_CONFIG = BillingConfig(dunning_delays_ms=DUNNING_DELAYS_MS)
METRIC = audit.METRIC
# Period 0 of a subscription ends this long after setup (so it ends during the run).
PERIOD_END_AFTER_SETUP_MS = (MINUTE_MS, 45 * MINUTE_MS)
BACKDATED_PROBABILITY = 0.1  # 2 or 3 months back: earlier periods are due at once
# Billing runs are heavier than charges (the sweep's time budget): the first tenant bills, the
# other keeps the charge workload alone; 2 of its customers subscribe, plus sometimes one whose
# card declines.
BILLING_TENANTS = 1
SUBSCRIBED_CUSTOMERS = 2
EXTRA_DECLINING_CUSTOMER_PROBABILITY = 0.3
DECLINING_CARD = "pm_card_chargeDeclined"
BASE_MINOR = (500, 5_000)
UNIT_MINOR = (1, 200)
MAX_EVENTS_PER_BATCH = 5
MAX_UNITS = 9
RECENT_WINDOW_MS = 30 * MINUTE_MS
FUTURE_PROBABILITY = 0.03
FUTURE_MS = 10 * MINUTE_MS  # beyond the 5 minutes of skew ingestion tolerates
MAX_FUTURE_SKEW_MS = 5 * MINUTE_MS
SAME_ID_IN_BATCH_PROBABILITY = 0.2
CONFLICT_IN_BATCH_PROBABILITY = 0.1
CONFLICTING_RESEND_PROBABILITY = 0.3
SAME_KEY_RUN_PROBABILITY = 0.25
CONFLICTING_RUN_PROBABILITY = 0.05
OLDEST_SNAPSHOT_PROBABILITY = 0.5
CLOCK_STEP_MS = (10 * MINUTE_MS, 50 * MINUTE_MS)
MAX_CLOCK_PER_RUN_MS = 8 * HOUR_MS
WORKER_INTERVAL_MS = 60_000
# Recovery moves the clock for an attempt in flight (its claim lease, a pending outcome's retry),
# never for a dunning retry: those stay scheduled (a final state the audit accepts), so recovery
# neither pays for a whole dunning schedule nor lets more periods end.
MAX_RECOVERY_WAIT_MS = 5 * MINUTE_MS


_TOKEN_SQL = sa.text("""
SELECT (SELECT count(*) FROM invoices),
  (SELECT sum(total_minor + amount_paid_minor + attempt_count) FROM invoices),
  (SELECT sum(CASE status WHEN 'paid' THEN 1 WHEN 'uncollectible' THEN 1000 ELSE 0 END)
     FROM invoices),
  (SELECT count(*) FROM invoice_lines), (SELECT sum(amount_minor + quantity) FROM invoice_lines),
  (SELECT count(*) FROM invoice_attempts),
  (SELECT sum(CASE status WHEN 'pending' THEN 0 WHEN 'failed' THEN 1 ELSE 1000 END)
     FROM invoice_attempts),
  (SELECT count(*) FROM usage_events), (SELECT count(invoice_id) FROM usage_events),
  (SELECT count(*) FROM charges WHERE invoice_id IS NOT NULL),
  (SELECT count(*) FROM charges WHERE invoice_id IS NOT NULL AND status = 'succeeded'),
  (SELECT count(*) FROM charge_attempts WHERE charge_id IN
     (SELECT id FROM charges WHERE invoice_id IS NOT NULL)),
  (SELECT count(*) FROM journal_entries WHERE entry_key LIKE 'invoice:%')
""")


class BillingExtension:
    name = "billing"

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self.rng = world.rng_for("billing")
        self.stale_rng = world.rng_for("billing-stale")
        profile = world.rng_for("billing-profile")
        self.stale_probability = 0.0 if profile.random() < 0.3 else profile.uniform(0.3, 0.7)
        self.resend_probability = profile.uniform(0.1, 0.4)
        self.overlap_probability = profile.uniform(0.2, 0.6)
        self.late_share = profile.uniform(0.3, 0.6)
        self.facts = BillingFacts(dunning_attempts=len(DUNNING_DELAYS_MS))
        self.batches: list[tuple[str, list[dict[str, Any]]]] = []
        self.snapshots: list[list[Any]] = []
        self.stale_actors: set[str] = set()  # membership only, never iterated
        self.hook = BillingWorkerHook(world.bk, BILLING_CONFIG, WORKER_INTERVAL_MS)
        self.clock_used_ms = 0
        self._audited_token: tuple[Any, ...] | None = None
        self.counts: dict[str, int] = {
            "usage_batches": 0,
            "usage_resends": 0,
            "late_events": 0,
            "billing_runs": 0,
            "overlapping_runs": 0,
            "worker_cycles": 0,
            "stale_reads": 0,
        }

    # --- setup -----------------------------------------------------------------------------------
    def _setup_command(self, tenant_id: str, operation: str, request: dict[str, Any]) -> str:
        result = self.world.bk.execute(
            tenant_id,
            operation,
            request,
            idempotency_key=f"setup-billing-{self.world.next_number('billing-setup')}",
            actor="setup",
        )
        assert result.status == 201, result.body_text
        return str(result.body()["id"])

    @property
    def tenants(self) -> list[str]:
        return self.world.tenants[:BILLING_TENANTS]

    def setup(self) -> None:
        world = self.world
        register_billing(world.bk, BILLING_CONFIG)
        stale.set_reader(self._stale_read)
        now_ms = world.clock.now_ms()
        for number, tenant_id in enumerate(self.tenants):
            self._setup_command(
                tenant_id,
                "metric.create",
                {"code": METRIC, "name": "Units", "aggregation": "sum", "property": METRIC},
            )
            base, unit = self.rng.randint(*BASE_MINOR), self.rng.randint(*UNIT_MINOR)
            plan_id = self._setup_command(
                tenant_id,
                "plan.create",
                {
                    "code": "sim-plan",
                    "name": "Simulated plan",
                    "currency": "usd",
                    "interval": "month",
                    "prices": [
                        {"type": "flat", "amount": base},
                        {"type": "per_unit", "metric": METRIC, "unit_amount": unit},
                    ],
                },
            )
            plan = SimPlan(plan_id, base, unit, "usd")
            self.facts.plans[tenant_id] = plan
            customer_ids = self.rng.sample(world.customers[tenant_id], SUBSCRIBED_CUSTOMERS)
            if self.rng.random() < EXTRA_DECLINING_CUSTOMER_PROBABILITY:
                customer_ids.append(
                    self._setup_command(
                        tenant_id,
                        "customer.create",
                        {"email": f"dunning@t{number}.example", "payment_method": DECLINING_CARD},
                    )
                )
            methods = self._payment_methods(tenant_id)
            for customer_id in customer_ids:
                months = (
                    1 if self.rng.random() >= BACKDATED_PROBABILITY else self.rng.choice((2, 2, 3))
                )
                start_ms = month_start_ms(now_ms, -months) + self.rng.randint(
                    *PERIOD_END_AFTER_SETUP_MS
                )
                subscription_id = self._setup_command(
                    tenant_id,
                    "subscription.create",
                    {"customer_id": customer_id, "plan_id": plan_id, "start_at": _iso(start_ms)},
                )
                self.facts.subscriptions[(tenant_id, subscription_id)] = SimSubscription(
                    tenant_id,
                    subscription_id,
                    customer_id,
                    plan,
                    start_ms,  # no trial: the billing anchor is the start
                    methods.get(customer_id) == DECLINING_CARD,
                )
        self._snapshot()
        world.note(
            f"billing setup: {len(self.facts.subscriptions)} subscriptions, plans "
            + ", ".join(f"{p.base_minor}+{p.unit_minor}/unit" for p in self.facts.plans.values())
        )

    def _payment_methods(self, tenant_id: str) -> dict[str, str]:
        with self.world.db.read() as conn:
            rows = conn.execute(
                sa.select(customers.c.id, customers.c.payment_method).where(
                    customers.c.tenant_id == tenant_id
                )
            ).all()
        return {str(r.id): str(r.payment_method) for r in rows}

    # --- the stale read fault --------------------------------------------------------------------
    def _snapshot(self) -> None:
        with self.world.db.read() as conn:
            self.snapshots.append(
                list(
                    conn.execute(
                        sa.select(subscriptions).order_by(
                            subscriptions.c.tenant_id, subscriptions.c.id
                        )
                    ).all()
                )
            )

    def _stale_read(
        self, conn: Connection, as_of_ms: int, tenant_id: str | None, limit: int
    ) -> list[Any] | None:
        actor = self.world.scheduler.current()
        if actor is None or actor.name not in self.stale_actors:
            return None
        self.stale_actors.discard(actor.name)  # once: its next read is a fresh one
        # Often the oldest snapshot (setup: every period 0 looks due), else any earlier one.
        if self.stale_rng.random() < OLDEST_SNAPSHOT_PROBABILITY:
            index = 0
        else:
            index = self.stale_rng.randrange(len(self.snapshots))
        rows = [
            row
            for row in self.snapshots[index]
            if row.next_period_end_ms is not None
            and row.next_period_end_ms <= as_of_ms
            and row.billing_error is None
            and (tenant_id is None or row.tenant_id == tenant_id)
        ]
        rows.sort(key=lambda row: (row.next_period_end_ms, row.tenant_id, row.id))
        self.counts["stale_reads"] += 1
        self.world.note(f"{actor.name} stale subscription read (snapshot {index}: {len(rows)} due)")
        return rows[:limit]

    def _maybe_stale(self, name: str) -> None:
        if self.rng.random() < self.stale_probability:
            self.stale_actors.add(name)

    # --- usage -----------------------------------------------------------------------------------
    def _invoiced_until(self, tenant_id: str) -> dict[str, tuple[int, int]]:
        """subscription -> (highest invoiced period index, its end)."""
        with self.world.db.read() as conn:
            rows = conn.execute(
                sa.select(
                    invoices.c.subscription_id,
                    sa.func.max(invoices.c.period_index),
                    sa.func.max(invoices.c.period_end_ms),
                )
                .where(invoices.c.tenant_id == tenant_id)
                .group_by(invoices.c.subscription_id)
            ).all()
        return {str(sub): (int(index), int(end)) for sub, index, end in rows}

    def act_usage_batch(self) -> None:
        world = self.world
        tenant_id = self.rng.choice(self.tenants)
        subs = audit.subscriptions_of(self.facts, tenant_id)
        until = self._invoiced_until(tenant_id)
        now_ms = world.clock.now_ms()
        events: list[dict[str, Any]] = []
        invoiced_subs = [sub for sub in subs if sub.subscription_id in until]
        for _ in range(self.rng.randint(1, MAX_EVENTS_PER_BATCH)):
            draw = self.rng.random()
            late = bool(invoiced_subs) and draw < self.late_share
            sub = self.rng.choice(invoiced_subs if late else subs)
            if late:  # a timestamp in a period already invoiced
                timestamp_ms = self.rng.randint(sub.anchor_ms, until[sub.subscription_id][1] - 1)
                self.counts["late_events"] += 1
            elif draw > 1 - FUTURE_PROBABILITY:
                timestamp_ms = now_ms + FUTURE_MS
            else:
                low = max(sub.anchor_ms, now_ms - RECENT_WINDOW_MS)
                timestamp_ms = self.rng.randint(low, now_ms)
            event = {
                "event_id": f"ev{world.next_number('usage-event'):05d}",
                "subscription_id": sub.subscription_id,
                "metric": METRIC,
                "timestamp": _iso(timestamp_ms),
                "properties": {METRIC: self.rng.randint(1, MAX_UNITS)},
            }
            if late:
                world.note(
                    f"late usage {event['event_id']} at {timestamp_ms} (invoiced until {until[sub.subscription_id][1]})"
                )
            events.append(event)
        if self.rng.random() < SAME_ID_IN_BATCH_PROBABILITY:
            events.append(dict(self.rng.choice(events)))
        if self.rng.random() < CONFLICT_IN_BATCH_PROBABILITY:
            events.append(_conflicting(self.rng.choice(events)))
        self.batches.append((tenant_id, events))
        self.counts["usage_batches"] += 1
        self._submit_batch(tenant_id, events, "batch")
        if self.rng.random() < self.resend_probability:
            self.counts["usage_resends"] += 1
            self._submit_batch(tenant_id, events, "concurrent duplicate batch")

    def act_usage_resend(self) -> None:
        tenant_id, events = self.rng.choice(self.batches)
        label = "duplicate batch"
        if self.rng.random() < CONFLICTING_RESEND_PROBABILITY:
            events = [
                _conflicting(e) if self.rng.random() < 0.5 or i == 0 else e
                for i, e in enumerate(events)
            ]
            label = "conflicting batch"
        self.counts["usage_resends"] += 1
        self._submit_batch(tenant_id, events, label)

    def _submit_batch(self, tenant_id: str, events: list[dict[str, Any]], label: str) -> None:
        world = self.world
        name = f"usage-{world.next_number('usage-client')}"
        ids = ",".join(str(e["event_id"]) for e in events)

        def body() -> None:
            now_ms = world.clock.now_ms()
            expected = self._expected_answer(tenant_id, events, now_ms)
            result = ingest_usage_events(world.db, tenant_id, {"events": events}, now_ms)
            self._record_answer(name, tenant_id, events, expected, result)

        world.note(f"submit {name} {label} {tenant_id} [{ids}]")
        world.spawn_actor(name, body)

    def _expected_answer(
        self, tenant_id: str, events: Sequence[dict[str, Any]], now_ms: int
    ) -> tuple[list[int], int, list[tuple[int, str]]]:
        """(indexes to be accepted, duplicates, [(index, rejection code)]) per the client model:
        the first content of an id wins, forever; the same content again is a duplicate; another
        content under a used id is `event_id_reused`; too far ahead is `timestamp_in_future`."""
        accepted: list[int] = []
        duplicates = 0
        rejected: list[tuple[int, str]] = []
        first_in_batch: dict[str, tuple[str, int, int]] = {}
        for index, event in enumerate(events):
            event_id, content = str(event["event_id"]), _content(event)
            if content[1] > now_ms + MAX_FUTURE_SKEW_MS:
                rejected.append((index, "timestamp_in_future"))
                continue
            earlier = first_in_batch.get(event_id)
            if earlier is not None:  # the batch's first content of an id is the candidate
                if earlier == content:
                    duplicates += 1
                else:
                    rejected.append((index, "event_id_reused"))
                continue
            first_in_batch[event_id] = content
            stored = self.facts.accepted.get((tenant_id, event_id))
            if stored is None:
                accepted.append(index)
            elif (stored.subscription_id, stored.timestamp_ms, stored.units) == content:
                duplicates += 1
            else:
                rejected.append((index, "event_id_reused"))
        return accepted, duplicates, rejected

    def _record_answer(
        self,
        name: str,
        tenant_id: str,
        events: Sequence[dict[str, Any]],
        expected: tuple[list[int], int, list[tuple[int, str]]],
        result: IngestResult,
    ) -> None:
        accepted, duplicates, rejected = expected
        got = (
            result.accepted,
            result.duplicates,
            sorted((r.index, r.code) for r in result.rejected),
        )
        want = (len(accepted), duplicates, sorted(rejected))
        self.world.note(f"{name} -> accepted {got[0]} duplicates {got[1]} rejected {got[2]}")
        if got != want:
            self.facts.answer_violations.append(
                ("I9", f"{name}: usage batch answered {got}, the client model expects {want}")
            )
        if not accepted:
            return
        until = self._invoiced_until(tenant_id)
        for index in accepted:
            subscription_id, timestamp_ms, units = _content(events[index])
            event_id = str(events[index]["event_id"])
            self.facts.accepted[(tenant_id, event_id)] = AcceptedEvent(
                tenant_id,
                event_id,
                subscription_id,
                timestamp_ms,
                units,
                until.get(subscription_id, (-1, 0))[0],
            )

    # --- billing runs ----------------------------------------------------------------------------
    def act_billing_run(self) -> None:
        world = self.world
        tenant_id = self.rng.choice(self.tenants)
        request = {"as_of": _iso(world.clock.now_ms())}
        intent = self._intent(tenant_id, request)
        self.counts["billing_runs"] += 1
        self._submit_run(intent)
        if self.rng.random() < SAME_KEY_RUN_PROBABILITY:
            self._submit_run(intent)
        if self.rng.random() < self.overlap_probability:
            self.counts["overlapping_runs"] += 1
            world.note(f"overlapping billing runs for {tenant_id}")
            self._submit_run(self._intent(tenant_id, dict(request)))
        if self.rng.random() < CONFLICTING_RUN_PROBABILITY:
            other = {"as_of": _iso(world.clock.now_ms() - MINUTE_MS)}
            conflicting = world.history.add(
                Intent(
                    len(world.history.intents),
                    tenant_id,
                    "billing_run.create",
                    intent.key,
                    other,
                    conflicts_with=intent.number,
                )
            )
            self._submit_run(conflicting)

    def _intent(self, tenant_id: str, request: dict[str, Any]) -> Intent:
        key = f"run{self.world.next_number('billing-run-key'):04d}"
        history = self.world.history
        return history.add(
            Intent(len(history.intents), tenant_id, "billing_run.create", key, request)
        )

    def _submit_run(self, intent: Intent) -> None:
        world = self.world
        name = f"billing-client-{world.next_number('billing-client')}"
        self._maybe_stale(name)

        def body() -> None:
            observation = observe_call(self.world.bk, self.world.clock, intent, name)
            intent.observations.append(observation)
            world.note(
                f"{name} intent {intent.number} -> {observation.kind} {observation.status}"
                f"{' final' if observation.final else ''}{' replay' if observation.replayed else ''}"
            )

        world.note(f"submit {name} intent {intent.number} billing_run.create {intent.key}")
        self._snapshot()
        world.spawn_actor(name, body)

    def act_worker_cycle(self) -> None:
        world = self.world
        name = f"billing-worker-{world.next_number('billing-worker')}"
        self._maybe_stale(name)
        self.counts["worker_cycles"] += 1

        def body() -> None:
            self.hook.actor = name
            result = self.hook()
            summary = "skipped (interval)" if result is None else _summary(result.as_dict())
            world.note(f"{name} cycle {summary}")

        self._snapshot()
        world.spawn_actor(name, body)

    def act_clock(self) -> None:
        delta_ms = self.rng.randint(*CLOCK_STEP_MS)
        self.clock_used_ms += delta_ms
        self.world.clock.advance(delta_ms)
        self.world.note(f"clock +{delta_ms}ms (billing: periods end, dunning retries come due)")

    def actions(self) -> Sequence[SimAction]:
        return (
            SimAction("usage_batch", 1.2, lambda: True, self.act_usage_batch),
            SimAction("usage_resend", 0.5, lambda: bool(self.batches), self.act_usage_resend),
            SimAction("billing_run", 0.6, lambda: True, self.act_billing_run),
            SimAction("billing_worker_cycle", 0.4, lambda: True, self.act_worker_cycle),
            SimAction(
                "clock_billing",
                0.35,
                lambda: self.clock_used_ms + CLOCK_STEP_MS[1] <= MAX_CLOCK_PER_RUN_MS,
                self.act_clock,
            ),
        )

    # --- audit and recovery ----------------------------------------------------------------------
    def _change_token(self) -> tuple[Any, ...]:
        """A cheap summary of the billing rows the safety audit reads: when it has not changed
        since the last clean audit, the audit is skipped. Gateway payments are left out (every
        core charge changes them); a payment for an invoice needs an invoice charge row first,
        which the summary counts. The final audit always runs in full."""
        with self.world.db.read() as conn:
            rows = tuple(conn.execute(_TOKEN_SQL).one())
        return (*rows, len(self.facts.accepted), len(self.facts.answer_violations))

    def check_safety(self) -> list[Violation]:
        token = self._change_token()
        if token == self._audited_token:
            return []
        found = audit.check_safety(self.world.db, GatewayView.load(self.world.core), self.facts)
        self._audited_token = None if found else token
        return found

    def _next_due_ms(self, now_ms: int) -> int | None:
        """When billing next has work: an open invoice's next attempt, or now if a period ended."""
        with self.world.db.read() as conn:
            attempt_at = conn.execute(
                sa.select(sa.func.min(invoices.c.next_attempt_at_ms)).where(
                    invoices.c.status == "open"
                )
            ).scalar_one()
            period_due = conn.execute(
                sa.select(sa.func.count())
                .select_from(subscriptions)
                .where(subscriptions.c.next_period_end_ms <= now_ms)
            ).scalar_one()
        if period_due:
            return now_ms
        return None if attempt_at is None else int(attempt_at)

    def recover(self) -> bool:
        """One billing cycle as of now when a period has ended or an attempt is due within
        MAX_RECOVERY_WAIT_MS (the clock moves there): once faults stop, every ended period gets
        its invoice and every attempt in flight its outcome."""
        world = self.world
        now_ms = world.clock.now_ms()
        due_ms = self._next_due_ms(now_ms)
        if due_ms is None or due_ms > now_ms + MAX_RECOVERY_WAIT_MS:
            return False
        if due_ms > now_ms:
            world.clock.advance(due_ms - now_ms + 1)
        name = f"billing-recovery-{world.next_number('billing-recovery')}"

        def body() -> None:
            result = run_billing_cycle(world.bk, world.clock.now_ms(), BILLING_CONFIG, actor=name)
            world.note(f"{name} cycle {_summary(result.as_dict())}")

        world.run_to_end(world.spawn_actor(name, body))
        return True

    def check_final(self) -> list[Violation]:
        stale.set_reader(None)
        return audit.check_final(
            self.world.db, GatewayView.load(self.world.core), self.facts, self.world.clock.now_ms()
        )

    def stats(self) -> dict[str, int]:
        with self.world.db.read() as conn:
            statuses: dict[str, int] = {
                str(status): int(count)
                for status, count in conn.execute(
                    sa.select(invoices.c.status, sa.func.count()).group_by(invoices.c.status)
                ).all()
            }
            retries = conn.execute(
                sa.select(sa.func.count())
                .select_from(invoice_attempts)
                .where(invoice_attempts.c.attempt_number > 1)
            ).scalar_one()
        return {
            **self.counts,
            "subscriptions": len(self.facts.subscriptions),
            "events_accepted": len(self.facts.accepted),
            "invoices": sum(statuses.values()),
            "invoices_paid": statuses.get("paid", 0),
            "invoices_uncollectible": statuses.get("uncollectible", 0),
            "dunning_retries": int(retries),
        }


def _iso(value_ms: int) -> str:
    text = ms_to_rfc3339(value_ms)
    assert text is not None
    return text


def _parse_iso(text: str) -> int:
    """Epoch ms of a timestamp written by `_iso` (parsed here, not by billkeep)."""
    whole, millis = text.removesuffix("Z").split(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return int(seconds) * 1000 + int(millis)


def _content(event: dict[str, Any]) -> tuple[str, int, int]:
    timestamp_ms = _parse_iso(str(event["timestamp"]))
    return str(event["subscription_id"]), timestamp_ms, int(event["properties"][METRIC])


def _conflicting(event: dict[str, Any]) -> dict[str, Any]:
    """The same event id with another payload (one more unit)."""
    return {**event, "properties": {METRIC: int(event["properties"][METRIC]) + 1}}


def _summary(result: dict[str, Any]) -> str:
    keys = ("invoices_created", "invoices_existing", "charges_attempted", "charges_succeeded",
            "charges_failed", "charges_pending")  # fmt: skip
    return " ".join(
        f"{k.removeprefix('invoices_').removeprefix('charges_')}={result[k]}" for k in keys
    )
