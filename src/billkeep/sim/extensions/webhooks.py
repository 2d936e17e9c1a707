"""Extension "webhooks": the gateway's events delivered to billkeep through the real receive path.

Every event `SimulatorCore` emits (read by `seq`, once per step) is queued for the tenant it
concerns (`webhook_network.WebhookNetwork`: reordered, delayed, duplicated, dropped and retried
deliveries, from the seed). A delivery runs in its own logical actor, as the HTTP route does:

    inbox.receive(...)  (signature verified for real, stored in one transaction)
    yield "webhook:stored"        a crash here: stored, never acknowledged -> redelivered
    acknowledge (2xx)
    yield "webhook:acknowledged"  a crash here: the event stays RECEIVED for the worker
    WebhookProcessor.process_event (unless the inbox said duplicate)

so deliveries interleave with the charge and refund clients at every yield point: a webhook
racing the charge command that made its payment is parked and released, as in production. A
worker action runs `process_due()` as `billkeep worker`'s periodic task does.

Attribution: a payment intent names its tenant in metadata[billkeep_tenant]; refunds, charges and
disputes are attributed through their own metadata or their payment intent's. All tenants share
the one simulated gateway account; an object with no tenant anywhere (a payment made outside
billkeep without one) is delivered to the account's first tenant, as a real account sends every
event to its endpoint: the processor must end it `ignored` (not billkeep's payment), and the
audit checks that it does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from billkeep.domain import payment_state
from billkeep.gateways.signing import SignatureInvalid, TimestampOutOfTolerance, sign_header
from billkeep.sim.auditor import Violation
from billkeep.sim.extension import SimAction, SimExtension, SimWorld, register_extension
from billkeep.sim.extensions.webhook_audit import WebhookAudit
from billkeep.sim.extensions.webhook_gateway import (
    GatewayTruth,
    SimGatewayObjects,
    read_new_events,
)
from billkeep.sim.extensions.webhook_network import (
    Attempt,
    Delivery,
    NetworkFault,
    NetworkProfile,
    WebhookNetwork,
)
from billkeep.sim.gateway import GATEWAY_NAME
from billkeep.sim.mutations import Mutation, register_mutation
from billkeep.sim.scheduler import Actor
from billkeep.storage.database import Database
from billkeep.storage.tables.reconciliation import webhook_events
from billkeep.webhooks import processor as processor_module
from billkeep.webhooks.endpoints import GatewayEndpoint
from billkeep.webhooks.inbox import receive
from billkeep.webhooks.limits import SIGNATURE_TOLERANCE_S, WebhookConfig
from billkeep.webhooks.processor import WebhookProcessor

__all__ = ["WebhookExtension"]

DELIVER_WEIGHT = 4.0
MAX_DELIVERIES_PER_ACTION = 3  # a burst: several requests in flight at once
WORKER_WEIGHT = 0.6
LOOKUP_FAILURE_PROBABILITY = 0.2  # a parked event's gateway lookup, while faults are on
MAX_RECOVERY_ROUNDS = 60  # deliveries + processor passes per recovery pass, bounded
PROCESS_GRACE_MS = 1  # past the due time, so `next_attempt_at_ms <= now` holds


class WebhookExtension:
    name = "webhooks"

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        rng = world.rng_for("webhooks:network")
        self.profile = NetworkProfile.draw(world.rng_for("webhooks:profile"))
        self.network = WebhookNetwork(rng, self.profile)
        self.lookup_rng = world.rng_for("webhooks:lookups")
        self.burst_rng = world.rng_for("webhooks:bursts")
        self.objects = SimGatewayObjects(
            world.core, self._lookup_fails, world.scheduler.yield_point
        )
        self.processor = WebhookProcessor(world.db, world.clock, WebhookConfig(), self.objects)
        self.audit = WebhookAudit(world.db, GATEWAY_NAME)
        self.secrets: dict[str, str] = {}
        self.last_seq = 0
        self.delivered_to: dict[str, str] = {}  # event id -> tenant it was queued for
        self.in_flight: list[tuple[Actor, Attempt]] = []
        self.errors: list[str] = []
        self.stats_: Counter[str] = Counter()

    # --- SimExtension ---------------------------------------------------------------------------
    def setup(self) -> None:
        for number, tenant_id in enumerate(self.world.tenants):
            self.secrets[tenant_id] = f"whsec_sim_{number}"
        self.world.note(f"webhooks network {self.profile.describe()}")

    def actions(self) -> Sequence[SimAction]:
        return (
            SimAction("webhook_deliver", DELIVER_WEIGHT, self._can_deliver, self.act_deliver),
            SimAction("webhook_worker", WORKER_WEIGHT, self._has_stored, self.act_worker),
        )

    def check_safety(self) -> list[Violation]:
        self._reap()
        found = [Violation("webhook", error) for error in self.errors]
        found += self.audit.check_safety(self.network.acknowledged, self.delivered_to)
        return found

    def recover(self) -> bool:
        """Deliver everything still queued (the network is calm now), then run the processor until
        nothing is pending, moving the clock past park retry times. True when it did work."""
        self.network.enabled = False
        did_work = False
        for _round in range(MAX_RECOVERY_ROUNDS):
            self._reap()
            self._poll()
            attempt = self.network.next_attempt(self._future_ms(), calm=True)
            if attempt is not None:
                self.world.run_to_end(self._spawn_delivery(attempt))
                did_work = True
                continue
            due_ms = self._next_due_ms()
            if due_ms is None:
                break
            if due_ms > self.world.clock.now_ms():
                self.world.clock.advance(due_ms + PROCESS_GRACE_MS - self.world.clock.now_ms())
                self.world.core.settle_due()
            self.world.run_to_end(self._spawn_worker())
            did_work = True
        return did_work

    def check_final(self) -> list[Violation]:
        self._reap()
        self._poll()
        undelivered = len(self.network.queue)
        # The per-step checks once more: recovery moved things no step audit saw.
        found = self.check_safety()
        final, outcomes = self.audit.check_final(GatewayTruth.load(self.world.core), undelivered)
        for outcome, count in sorted(outcomes.items()):
            self.stats_[f"outcome_{outcome}"] = count
        return found + final

    def stats(self) -> dict[str, int]:
        return {**dict(sorted(self.network.counts.items())), **dict(sorted(self.stats_.items()))}

    # --- the gateway's events -------------------------------------------------------------------
    def _poll(self) -> None:
        """Queue every event emitted since the last look (one indexed read)."""
        now_ms = self.world.clock.now_ms()
        for event in read_new_events(self.world.core, self.last_seq):
            self.last_seq = event.seq
            tenant_id = event.tenant_id
            if tenant_id is None:
                tenant_id = self.world.tenants[0]
                self.stats_["untenanted"] += 1
                self.world.note(f"webhook {event.event_id} names no tenant: to {tenant_id}")
            self.delivered_to[event.event_id] = tenant_id
            delivery = Delivery(
                event.event_id, event.event_type, tenant_id, event.seq, event.body, now_ms
            )
            if self.network.enqueue(delivery, now_ms):
                held_ms = delivery.ready_at_ms - now_ms
                self.world.note(f"webhook {event.event_id} held back {held_ms}ms by the network")

    def _lookup_fails(self) -> bool:
        return self.world.faults_on and self.lookup_rng.random() < LOOKUP_FAILURE_PROBABILITY

    # --- actions --------------------------------------------------------------------------------
    def _can_deliver(self) -> bool:
        self._reap()
        self._poll()
        return bool(self.network.ready(self.world.clock.now_ms()))

    def _has_stored(self) -> bool:
        return bool(self.network.acknowledged) or self.stats_["stored"] > 0

    def act_deliver(self) -> None:
        for _ in range(self.burst_rng.randint(1, MAX_DELIVERIES_PER_ACTION)):
            attempt = self.network.next_attempt(self.world.clock.now_ms())
            if attempt is None:
                break
            self._spawn_delivery(attempt)

    def act_worker(self) -> None:
        self._spawn_worker()

    def _spawn_worker(self) -> Actor:
        name = f"webhook-worker-{self.world.next_number('webhook-worker')}"

        def body() -> None:
            done = self.processor.process_due()
            self.world.note(f"{name} processed {done}")

        return self.world.spawn_actor(name, body)

    def _spawn_delivery(self, attempt: Attempt) -> Actor:
        delivery = attempt.delivery
        name = f"webhook-{self.world.next_number('webhook')}"
        how = "reordered " if attempt.reordered else ""
        fault = f" {attempt.fault.value}" if attempt.fault else ""
        self.world.note(
            f"{name} delivers {how}{delivery.event_id} {delivery.event_type} to "
            f"{delivery.tenant_id} (attempt {attempt.number}{fault})"
        )
        actor = self.world.spawn_actor(name, lambda: self._deliver(name, attempt))
        if not actor.finished:
            self.in_flight.append((actor, attempt))
        else:
            self._settle(actor, attempt)
        return actor

    def _deliver(self, name: str, attempt: Attempt) -> None:
        """One HTTP delivery, as `POST /v1/webhooks/{gateway_id}` handles it."""
        delivery = attempt.delivery
        world = self.world
        secret = self.secrets[delivery.tenant_id]
        endpoint = GatewayEndpoint(delivery.tenant_id, GATEWAY_NAME, (secret,))
        now_ms = world.clock.now_ms()
        if attempt.fault in (NetworkFault.DROPPED, NetworkFault.RECEIVER_5XX):
            world.note(f"{name} failed before the receiver stored it ({attempt.fault.value})")
            return
        if attempt.fault in (NetworkFault.FORGED, NetworkFault.STALE_SIGNATURE):
            self._expect_rejected(name, attempt, endpoint, secret, now_ms)
            return
        header = sign_header(delivery.body, [secret], now_ms // 1000)
        received = receive(world.db, endpoint, delivery.body, header, now_ms)
        self.stats_["stored"] += 0 if received.duplicate else 1
        self.stats_["receive_duplicate"] += 1 if received.duplicate else 0
        world.scheduler.yield_point("webhook:stored")
        if attempt.fault is NetworkFault.ACK_LOST:
            world.note(f"{name} stored, the 2xx was lost")
            return
        self.network.acknowledge(attempt, world.clock.now_ms())
        world.scheduler.yield_point("webhook:acknowledged")
        if received.duplicate:
            world.note(f"{name} duplicate {delivery.event_id}")
            return
        outcome = self.processor.process_event(received.tenant_id, received.id)
        world.note(f"{name} {delivery.event_id} -> {outcome.value}")

    def _expect_rejected(
        self, name: str, attempt: Attempt, endpoint: GatewayEndpoint, secret: str, now_ms: int
    ) -> None:
        """A request that must not be stored: a tampered body, or a signature too old."""
        body = attempt.delivery.body
        signed_s = now_ms // 1000
        if attempt.fault is NetworkFault.FORGED:
            event = json.loads(body)
            event["data"]["object"]["amount"] = int(event["data"]["object"].get("amount", 0)) + 1
            header = sign_header(body, [secret], signed_s)
            body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        else:
            header = sign_header(body, [secret], signed_s - 2 * SIGNATURE_TOLERANCE_S)
        try:
            receive(self.world.db, endpoint, body, header, now_ms)
        except (SignatureInvalid, TimestampOutOfTolerance) as exc:
            self.world.note(f"{name} rejected: {type(exc).__name__}")
            return
        self.errors.append(f"{name}: a {attempt.fault} request was accepted")

    def _settle(self, actor: Actor, attempt: Attempt) -> None:
        """A finished delivery actor (done, crashed, or raised: the runner reports a raise as a
        harness failure): unless some attempt was acknowledged, the network retries the event."""
        self.network.failed(attempt, self.world.clock.now_ms())

    def _reap(self) -> None:
        still: list[tuple[Actor, Attempt]] = []
        for actor, attempt in self.in_flight:
            if actor.finished:
                self._settle(actor, attempt)
            else:
                still.append((actor, attempt))
        self.in_flight = still

    # --- recovery helpers -----------------------------------------------------------------------
    def _future_ms(self) -> int:
        """Recovery delivers held-back events at once: the network's delays are over."""
        return max([self.world.clock.now_ms(), *(d.ready_at_ms for d in self.network.queue)])

    def _next_due_ms(self) -> int | None:
        with self.world.db.read() as conn:
            due = conn.execute(
                sa.select(sa.func.min(webhook_events.c.next_attempt_at_ms)).where(
                    webhook_events.c.outcome.in_(("received", "parked"))
                )
            ).scalar_one_or_none()
        return None if due is None else int(due)


# --- mutation stale_event: a lower report is applied instead of being stale or a duplicate -----------
def _stale_event(stack: ExitStack, _db: Database) -> None:
    """The processor (and the local-knowledge fold) look `apply` up by name in their modules: the
    patch replaces it there, so webhook processing really runs without the stale rule."""
    from billkeep.webhooks import local

    original = payment_state.apply

    def without_stale_rule(state: payment_state.PaymentState, fact: Any) -> payment_state.Applied:
        result = original(state, fact)
        if result.outcome not in (payment_state.Outcome.STALE, payment_state.Outcome.DUPLICATE):
            return result
        if isinstance(fact, payment_state.PaymentProcessing):
            lowered = _replace_status(state, payment_state.PaymentStatus.PROCESSING)
        elif isinstance(fact, payment_state.PaymentFailed):
            lowered = _replace_status(state, payment_state.PaymentStatus.FAILED, fact)
        elif isinstance(fact, payment_state.RefundObserved) and state.refund(fact.refund_id):
            refunds = tuple(
                payment_state.RefundRecord(r.refund_id, r.amount_minor, fact.status)
                if r.refund_id == fact.refund_id
                else r
                for r in state.refunds
            )
            lowered = _replace(state, refunds=refunds)
        else:
            return result
        if lowered == state:
            return result
        return payment_state.Applied(lowered, payment_state.Outcome.APPLIED)

    for module in (processor_module, local):
        original_in_module = module.apply
        module.apply = without_stale_rule  # type: ignore[attr-defined]
        stack.callback(setattr, module, "apply", original_in_module)


def _replace(state: payment_state.PaymentState, **changes: Any) -> payment_state.PaymentState:
    return replace(state, **changes)


def _replace_status(
    state: payment_state.PaymentState,
    status: payment_state.PaymentStatus,
    failed: payment_state.PaymentFailed | None = None,
) -> payment_state.PaymentState:
    failures = state.failures | {failed.failure} if failed is not None else state.failures
    return _replace(state, status=status, failures=failures)


register_mutation(
    Mutation(
        "stale_event",
        "a webhook reporting less than is known is stale, never applied (I8)",
        _stale_event,
    )
)


def _factory(world: SimWorld) -> SimExtension:
    return WebhookExtension(world)


register_extension("webhooks", _factory)
