"""A seeded model of a gateway's webhook delivery network (at-least-once, as Stripe's).

Every event the simulated gateway emits is queued for the tenant it concerns. A delivery attempt
takes one queued event (in order, or any of them: reordering), and the network may hold an event
back until the clock passes a drawn time (delay), fail an attempt before the receiver stored it
(connection dropped, or the receiver answered 5xx: retried on a backoff), lose the receiver's 2xx
answer after it stored the event (redelivered: a duplicate), or deliver an acknowledged event
again later (Stripe's at-least-once duplicates). An attempt whose receiver never answers (it
crashed, or is parked past the timeout) counts as failed and is retried.

The model only keeps queues and counters; `billkeep.sim.extensions.webhooks` runs the attempts
through the real receive path. Nothing here reads the engine's tables.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "DELIVERY_TIMEOUT_MS",
    "Attempt",
    "Delivery",
    "NetworkFault",
    "NetworkProfile",
    "WebhookNetwork",
]

# A receiver that has not answered this long after the request was sent has timed out (Stripe
# gives up on an attempt after a few seconds and retries later).
DELIVERY_TIMEOUT_MS = 30_000
# Stripe retries failed deliveries with an exponential backoff; shortened here so a run (whose
# simulated time must stay far below the 72 h key retention) sees several retries.
RETRY_BACKOFF_MS = (1_000, 10_000, 60_000, 10 * 60_000, 60 * 60_000)
MAX_DELAY_MS = 30 * 60_000  # an event held back by the network, at most this long
MAX_DUPLICATE_DELAY_MS = 10 * 60_000  # an at-least-once duplicate comes this long after, at most


class NetworkFault(StrEnum):
    DROPPED = "dropped"  # the connection failed before the receiver stored anything
    RECEIVER_5XX = "receiver_5xx"  # the receiver refused before storing (e.g. overloaded)
    ACK_LOST = "ack_lost"  # stored, but the 2xx never reached the gateway: redelivered
    FORGED = "forged"  # an attacker replays the body with a changed amount: must be rejected
    STALE_SIGNATURE = "stale_signature"  # a capture replayed past the signature tolerance


@dataclass(frozen=True)
class NetworkProfile:
    """Per-seed intensities (all zero when the simulation's faults are off)."""

    reorder: float  # pick any ready event instead of the oldest
    delay: float  # hold a new event back for a drawn time
    duplicate: float  # deliver an acknowledged event once more, later
    fault: float  # an attempt fails in one of NetworkFault's ways

    @classmethod
    def draw(cls, rng: random.Random) -> NetworkProfile:
        stormy = rng.random() < 0.8
        return cls(
            reorder=rng.uniform(0.2, 0.7) if stormy else 0.0,
            delay=rng.uniform(0.05, 0.3) if stormy else 0.0,
            duplicate=rng.uniform(0.05, 0.4) if stormy else 0.0,
            fault=rng.uniform(0.05, 0.3) if stormy else 0.0,
        )

    def describe(self) -> str:
        return (
            f"reorder={self.reorder:.2f} delay={self.delay:.2f} "
            f"dup={self.duplicate:.2f} fault={self.fault:.2f}"
        )


@dataclass
class Delivery:
    """One event on its way to one tenant's endpoint."""

    event_id: str
    event_type: str
    tenant_id: str
    seq: int  # the gateway's emission order
    body: bytes
    ready_at_ms: int
    attempts: int = 0
    in_flight_since_ms: int | None = None
    acknowledged: bool = False  # once: later deliveries of it are at-least-once duplicates


@dataclass(frozen=True)
class Attempt:
    delivery: Delivery
    number: int  # this delivery's attempt number (1, 2, ...)
    fault: NetworkFault | None
    reordered: bool


@dataclass
class WebhookNetwork:
    rng: random.Random
    profile: NetworkProfile
    enabled: bool = True
    queue: list[Delivery] = field(default_factory=list)
    # (tenant, event id) of every event some attempt acknowledged (the receiver answered 2xx).
    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)

    def enqueue(self, delivery: Delivery, now_ms: int) -> bool:
        """Queue a new event; True when the network holds it back for a while."""
        self.counts["events"] += 1
        delayed = self.enabled and self.rng.random() < self.profile.delay
        if delayed:
            delivery.ready_at_ms = now_ms + self.rng.randint(1_000, MAX_DELAY_MS)
            self.counts["delayed"] += 1
        self.queue.append(delivery)
        return delayed

    def ready(self, now_ms: int) -> list[Delivery]:
        """Deliveries an attempt may take now, oldest emission first."""
        ready = [
            d
            for d in self.queue
            if d.ready_at_ms <= now_ms
            and (
                d.in_flight_since_ms is None or now_ms - d.in_flight_since_ms > DELIVERY_TIMEOUT_MS
            )
        ]
        return sorted(ready, key=lambda d: (d.seq, d.ready_at_ms))

    def next_attempt(self, now_ms: int, *, calm: bool = False) -> Attempt | None:
        ready = self.ready(now_ms)
        if not ready:
            return None
        faulty = self.enabled and not calm
        reordered = faulty and len(ready) > 1 and self.rng.random() < self.profile.reorder
        delivery = self.rng.choice(ready) if reordered else ready[0]
        if reordered and delivery is not ready[0]:
            self.counts["reordered"] += 1
        fault: NetworkFault | None = None
        if faulty and self.rng.random() < self.profile.fault:
            fault = self.rng.choice(list(NetworkFault))
            self.counts[fault.value] += 1
        if delivery.in_flight_since_ms is not None:
            self.counts["timed_out_redelivered"] += 1
        delivery.attempts += 1
        delivery.in_flight_since_ms = now_ms
        self.counts["attempts"] += 1
        return Attempt(delivery, delivery.attempts, fault, reordered)

    def failed(self, attempt: Attempt, now_ms: int) -> None:
        """The attempt got no 2xx: retry on the backoff (if it is still the latest attempt)."""
        delivery = attempt.delivery
        if delivery not in self.queue or delivery.attempts != attempt.number:
            return
        backoff = RETRY_BACKOFF_MS[min(attempt.number - 1, len(RETRY_BACKOFF_MS) - 1)]
        delivery.in_flight_since_ms = None
        delivery.ready_at_ms = now_ms + backoff
        self.counts["retries"] += 1

    def acknowledge(self, attempt: Attempt, now_ms: int) -> None:
        """The receiver answered 2xx: the event leaves the queue, maybe to come back once more."""
        delivery = attempt.delivery
        self.acknowledged.add((delivery.tenant_id, delivery.event_id))
        self.counts["acknowledged"] += 1
        if delivery not in self.queue:
            return  # an earlier attempt was already acknowledged
        self.queue.remove(delivery)
        if delivery.acknowledged:
            return
        delivery.acknowledged = True
        if self.enabled and self.rng.random() < self.profile.duplicate:
            again = Delivery(
                delivery.event_id,
                delivery.event_type,
                delivery.tenant_id,
                delivery.seq,
                delivery.body,
                now_ms + self.rng.randint(0, MAX_DUPLICATE_DELAY_MS),
                acknowledged=True,
            )
            self.queue.append(again)
            self.counts["duplicated"] += 1
