"""How hostile one seed's world is, and the yield policy that turns it into crashes and parks.

Every intensity is drawn from the seed, so a sweep covers calm runs (where a bug in the happy
path shows) and storms (where recovery is exercised) without anyone choosing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from billkeep.sim.scheduler import Actor, YieldDecision

__all__ = ["FaultProfile", "YieldPolicy"]


@dataclass(frozen=True)
class FaultProfile:
    crash_probability: float  # per yield point: the actor's process dies there
    park_probability: float  # per yield point: another actor gets to run first
    gateway_fault_probability: float  # per gateway write: one of the network faults
    lookup_failure_probability: float  # per gateway read
    max_latency_ms: int  # per gateway round trip, as clock advance
    duplicate_probability: float  # a second client sends the same key concurrently
    conflicting_duplicate_probability: float  # ... or the same key with another request
    stale_key_read_probability: float  # a duplicate's key lookup races the first insert
    refund_race_probability: float  # two refunds of one charge at once
    async_share: float  # share of charges paid with an asynchronous method
    async_settle_ms: int  # how long an async payment stays processing at the gateway

    @classmethod
    def draw(cls, rng: random.Random) -> FaultProfile:
        storm = rng.random() < 0.7  # most seeds are hostile; some stay calm
        return cls(
            crash_probability=rng.uniform(0.01, 0.08) if storm else 0.0,
            park_probability=rng.uniform(0.1, 0.5),
            gateway_fault_probability=rng.uniform(0.05, 0.35) if storm else 0.0,
            lookup_failure_probability=rng.uniform(0.0, 0.3) if storm else 0.0,
            max_latency_ms=rng.choice((0, 200, 2_000, 40_000)),
            duplicate_probability=rng.uniform(0.1, 0.4),
            conflicting_duplicate_probability=rng.uniform(0.0, 0.1),
            stale_key_read_probability=rng.uniform(0.2, 0.8),
            refund_race_probability=rng.uniform(0.2, 0.6),
            async_share=rng.uniform(0.0, 0.3),
            async_settle_ms=rng.choice((1_000, 30_000, 600_000)),
        )

    def describe(self) -> str:
        return (
            f"crash={self.crash_probability:.3f} park={self.park_probability:.2f} "
            f"gw={self.gateway_fault_probability:.2f} lookup={self.lookup_failure_probability:.2f} "
            f"latency<={self.max_latency_ms}ms dup={self.duplicate_probability:.2f} "
            f"async={self.async_share:.2f}"
        )


class YieldPolicy:
    """At each yield point: crash, park or continue, from the seed; all calm once faults stop."""

    def __init__(self, profile: FaultProfile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self.enabled = True
        self.crashes = 0

    def __call__(self, actor: Actor, point: str) -> YieldDecision:
        if not self.enabled:
            return YieldDecision.CONTINUE
        draw = self.rng.random()
        if draw < self.profile.crash_probability:
            self.crashes += 1
            return YieldDecision.CRASH
        if draw < self.profile.crash_probability + self.profile.park_probability:
            return YieldDecision.PARK
        return YieldDecision.CONTINUE
