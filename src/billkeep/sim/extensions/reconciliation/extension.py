"""The "reconciliation" extension: reconciliation runs through the command path, and gateway
activity billkeep did not cause, drawn from the seed.

Actions:
- `reconcile`: a client asks for `reconciliation.create` over the whole run so far or a recent
  part of it (the source reads the tenant's gateway account on the wire: latency, a yield point,
  a failing first or later page). Sometimes a concurrent duplicate of the same key, a second run
  with another key over an overlapping window, or the same key asked again later (a replay).
- `outside_payment`: a payment made in the tenant's gateway account outside billkeep.
- `dashboard_refund`, `dispute`: money leaving one of billkeep's payments at the gateway.
  Reconciliation reads refunds and disputes too and heals them (as a webhook would), so the final
  I4 check holds with or without the webhook extension in the run. They are drawn only when the
  extension named by `MONEY_OUT_DRAWN_WITH` is in the run, so that runs without it keep the
  action stream (and the seeds pinned on it) they had before reconciliation learned them.

Recovery: once faults stop and every command is final, the clock passes the grace period,
the gateway settles what is due, and each tenant runs a final reconciliation (healing) over the
whole run; `check_final` then checks I4 against the gateway's store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.gateways.simulator.errors import StripeError
from billkeep.gateways.simulator.params import DisputeCreate, PaymentIntentCreate, RefundCreate
from billkeep.reconciliation.operation import OPERATION, install
from billkeep.reconciliation.runner import ReconciliationConfig
from billkeep.sim import workload
from billkeep.sim.auditor import Violation
from billkeep.sim.extension import SimAction, SimWorld
from billkeep.sim.extensions.reconciliation.audit import (
    GatewayFacts,
    LedgerRows,
    final_violations,
    step_violations,
)
from billkeep.sim.extensions.reconciliation.source import ReadFaults, SimTenantSourceFactory
from billkeep.sim.gateway import TENANT_METADATA_KEY
from billkeep.sim.history import Intent, observe_call
from billkeep.sim.scheduler import Actor

__all__ = ["SIM_RECONCILIATION_CONFIG", "ReconciliationExtension"]

NAME = "reconciliation"
# Grace period of the simulation's runs: young one-sided records are pending_timing. Shorter than
# the default hour so that runs during the faulty phase also classify and heal.
SIM_GRACE_MS = 15 * 60_000
SIM_RECONCILIATION_CONFIG = ReconciliationConfig(grace_period_ms=SIM_GRACE_MS)
WINDOW_LEAD_MS = 60 * 60_000  # windows start an hour before the run began (nothing is older)
WINDOW_TAIL_MS = 60_000  # and end a minute after now
MAX_RUNS_PER_SEED = 6  # each run reads the tenant's whole account: keep them few (budget)
DUPLICATE_PROBABILITY = 0.25
OVERLAP_PROBABILITY = 0.25
REPLAY_PROBABILITY = 0.2
RECENT_WINDOW_PROBABILITY = 0.3
PARTIAL_REFUND_PROBABILITY = 0.6
OUTSIDE_DECLINE_PROBABILITY = 0.2
READ_FAILURE_PROBABILITY = 0.15  # per listing read and per later page, while faults are on
WEIGHTS = {
    "reconcile": 0.35,
    "outside_payment": 0.25,
    "dashboard_refund": 0.3,
    "dispute": 0.12,
}
# Dashboard refunds and disputes are drawn when this extension is in the run too (the module
# docstring says why); tests/e2e/sim/test_reconciliation.py draws them without it.
MONEY_OUT_DRAWN_WITH = "webhooks"


class ReconciliationExtension:
    name = NAME

    def __init__(self, world: SimWorld, *, money_out: bool | None = None) -> None:
        self.world = world
        self.rng = world.rng_for("reconciliation")
        self.read_faults = ReadFaults(
            world.rng_for("reconciliation:reads"),
            READ_FAILURE_PROBABILITY if world.profile.lookup_failure_probability > 0 else 0.0,
            world.profile.max_latency_ms,
            lambda: world.faults_on,
        )
        if money_out is None:
            options = getattr(world, "options", None)
            money_out = MONEY_OUT_DRAWN_WITH in getattr(options, "extensions", frozenset())
        self.money_out = money_out  # draw dashboard refunds and disputes
        self.sources = SimTenantSourceFactory(
            world.core, world.clock, self.read_faults, world.scheduler.yield_point
        )
        self.origin_ms = 0
        self.intents: list[Intent] = []
        self.final_runs: dict[str, str] = {}
        self.final_seq: int | None = None  # the gateway's sequence when the final runs ended
        self.final_passes = 0
        self.seen_entries: dict[tuple[str, str], Any] = {}
        self.counts = {
            "runs_asked": 0,
            "duplicates": 0,
            "overlaps": 0,
            "replays": 0,
            "outside_payments": 0,
            "dashboard_refunds": 0,
            "disputes": 0,
            "refused_at_gateway": 0,
        }

    # --- SimExtension ------------------------------------------------------------------------
    def setup(self) -> None:
        install(self.world.bk, self.sources, SIM_RECONCILIATION_CONFIG)
        self.origin_ms = self.world.clock.now_ms()

    def actions(self) -> Sequence[SimAction]:
        found = [
            SimAction(
                "reconcile",
                WEIGHTS["reconcile"],
                lambda: len(self.intents) < MAX_RUNS_PER_SEED,
                self.act_reconcile,
            ),
            SimAction(
                "outside_payment", WEIGHTS["outside_payment"], lambda: True, self.act_outside
            ),
        ]
        if self.money_out:
            found += [
                SimAction(
                    "dashboard_refund",
                    WEIGHTS["dashboard_refund"],
                    lambda: bool(self._billkeep_payments()),
                    self.act_dashboard_refund,
                ),
                SimAction(
                    "dispute",
                    WEIGHTS["dispute"],
                    lambda: bool(self._billkeep_payments()),
                    self.act_dispute,
                ),
            ]
        return found

    def check_safety(self) -> list[Violation]:
        ledger = LedgerRows.load(self.world.db)
        gateway = GatewayFacts.load(self.world.core)
        return step_violations(ledger, gateway, self.seen_entries, self.intents)

    def _gateway_seq(self) -> int:
        """How far the gateway's store has moved (every object and event takes a sequence)."""
        with self.world.core.store.read() as tx:
            row = tx.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM objects").fetchone()
        return int(row[0])

    def recover(self) -> bool:
        """Final runs, again whenever the gateway moved since the last ones (another extension's
        recovery, e.g. billing charging an invoice, may pay after them)."""
        if self._gateway_seq() == self.final_seq:
            return False
        self.final_passes += 1
        # Past the grace period and any async settlement, so the final run judges final records.
        self.world.clock.advance(SIM_GRACE_MS + self.world.profile.async_settle_ms + 1)
        settled = self.world.core.settle_due()
        self.world.note(f"reconciliation: final runs (gateway settled {settled})")
        for tenant_id in self.world.tenants:
            intent = self._intent(
                tenant_id,
                f"final-reconciliation-{self.final_passes}-{tenant_id}",
                self._window(False),
            )
            self.world.run_to_end(self._submit(intent))
            final = intent.first_final()
            body = final.body() if final is not None else None
            if isinstance(body, dict) and "id" in body:
                self.final_runs[tenant_id] = str(body["id"])
            else:
                self.final_runs[tenant_id] = f"(none: {intent.observations[-1:]})"
        self.final_seq = self._gateway_seq()
        return True

    def check_final(self) -> list[Violation]:
        ledger = LedgerRows.load(self.world.db)
        gateway = GatewayFacts.load(self.world.core)
        found = step_violations(ledger, gateway, self.seen_entries, self.intents)
        for row in ledger.breaks:
            for resolution in (row.resolution or "unresolved").split(","):
                what = (
                    f"breaks_{row.type}_{resolution}" if not row.healed else f"heals_{resolution}"
                )
                self.counts[what] = self.counts.get(what, 0) + 1
        self.counts["runs_completed"] = sum(r.status == "completed" for r in ledger.runs.values())
        return found + final_violations(ledger, gateway, self.final_runs)

    def stats(self) -> dict[str, int]:
        return {
            **self.counts,
            "source_reads": self.sources.reads,
            "read_faults": len(self.read_faults.log),
        }

    # --- clients ------------------------------------------------------------------------------
    def _window(self, recent: bool) -> dict[str, Any]:
        now_ms = self.world.clock.now_ms()
        start_ms = self.origin_ms - WINDOW_LEAD_MS
        if recent and now_ms > self.origin_ms:
            start_ms = self.rng.randint(self.origin_ms, now_ms)
        return {"from": ms_to_rfc3339(start_ms), "to": ms_to_rfc3339(now_ms + WINDOW_TAIL_MS)}

    def _intent(self, tenant_id: str, key: str, request: dict[str, Any]) -> Intent:
        history = self.world.history
        intent = history.add(Intent(len(history.intents), tenant_id, OPERATION, key, request))
        self.intents.append(intent)
        return intent

    def _submit(self, intent: Intent) -> Actor:
        name = f"reconciler-{self.world.next_number('reconciler')}"
        world = self.world

        def body() -> None:
            observation = observe_call(world.bk, world.clock, intent, name)
            intent.observations.append(observation)
            world.note(
                f"{name} intent {intent.number} -> {observation.kind} {observation.status}"
                f"{' final' if observation.final else ''}{' replay' if observation.replayed else ''}"
            )

        world.note(f"submit {name} intent {intent.number} {OPERATION} {intent.key}")
        return world.spawn_actor(name, body)

    def act_reconcile(self) -> None:
        if self.intents and self.rng.random() < REPLAY_PROBABILITY:
            self.counts["replays"] += 1
            self._submit(self.rng.choice(self.intents))
            return
        tenant_id = self.rng.choice(self.world.tenants)
        recent = self.rng.random() < RECENT_WINDOW_PROBABILITY
        key = f"rec{self.world.next_number('reconciliation-key'):03d}"
        intent = self._intent(tenant_id, key, self._window(recent))
        self.counts["runs_asked"] += 1
        self._submit(intent)
        if self.rng.random() < DUPLICATE_PROBABILITY:
            self.counts["duplicates"] += 1
            self._submit(intent)
        if self.rng.random() < OVERLAP_PROBABILITY and len(self.intents) < MAX_RUNS_PER_SEED:
            self.counts["overlaps"] += 1
            other = f"rec{self.world.next_number('reconciliation-key'):03d}"
            self._submit(self._intent(tenant_id, other, self._window(not recent)))

    # --- the gateway's outside actors ------------------------------------------------------
    def act_outside(self) -> None:
        tenant_id = self.rng.choice(self.world.tenants)
        declined = self.rng.random() < OUTSIDE_DECLINE_PROBABILITY
        params = PaymentIntentCreate(
            amount=workload.amount_minor(self.rng),
            currency=self.rng.choice(workload.CURRENCIES),
            payment_method="pm_card_chargeDeclined" if declined else "pm_card_visa",
            confirm=True,
            off_session=True,
            description="made outside billkeep",
            metadata={TENANT_METADATA_KEY: tenant_id},  # the tenant's gateway account
        )
        response = self.world.core.create_external_payment_intent(params)
        body = response.body
        intent = body["error"].get("payment_intent") if "error" in body else body
        self.counts["outside_payments"] += 1
        reference = intent.get("id") if isinstance(intent, dict) else None
        self.world.note(
            f"gateway: outside payment {reference} for {tenant_id} {response.status_code}"
        )

    def _billkeep_payments(self) -> list[tuple[str, str]]:
        """(payment, tenant) of billkeep's succeeded payments, in creation order."""
        facts = GatewayFacts.load(self.world.core)
        return [
            (pi, owner)
            for pi, (owner, command, _a, _c, status, _ch) in facts.payments.items()
            if owner is not None and command is not None and status == "succeeded"
        ]

    def act_dashboard_refund(self) -> None:
        payment, tenant_id = self.rng.choice(self._billkeep_payments())
        amount = None
        if self.rng.random() < PARTIAL_REFUND_PROBABILITY:
            amount = self.rng.randint(1, workload.MIN_AMOUNT_MINOR)
        params = RefundCreate(
            payment_intent=payment, amount=amount, metadata={TENANT_METADATA_KEY: tenant_id}
        )
        try:
            refund = self.world.core.create_refund(params).body
        except StripeError as exc:  # fully refunded or disputed already: the gateway says no
            self.counts["refused_at_gateway"] += 1
            self.world.note(f"gateway: dashboard refund of {payment} refused: {exc.code}")
            return
        self.counts["dashboard_refunds"] += 1
        self.world.note(f"gateway: dashboard refund {refund['id']} {refund['amount']} of {payment}")

    def act_dispute(self) -> None:
        payment, _tenant = self.rng.choice(self._billkeep_payments())
        try:
            dispute = self.world.core.create_dispute(DisputeCreate(payment_intent=payment))
        except StripeError as exc:
            self.counts["refused_at_gateway"] += 1
            self.world.note(f"gateway: dispute of {payment} refused: {exc.code}")
            return
        self.counts["disputes"] += 1
        self.world.note(f"gateway: dispute {dispute['id']} {dispute['amount']} of {payment}")
