"""The workload: which logical clients and workers act next, drawn from the seed.

Each action is small (spawn one client, resume one parked actor, move the clock...); the mix is
weighted so parked actors are usually resumed before new ones pile up, and duplicates, refund
races, clock jumps past the lease and past the gateway's key retention all happen regularly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "ACTION_WEIGHTS",
    "CLOCK_JUMPS_MS",
    "CURRENCIES",
    "DECLINING_METHODS",
    "ClockJump",
    "choose_action",
]

CURRENCIES = ("usd", "eur")
DEFAULT_METHODS = ("pm_card_visa", "pm_card_visa", "pm_card_visa", "pm_card_chargeDeclined")
DECLINING_METHODS = ("pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds")
MIN_AMOUNT_MINOR = 100
MAX_AMOUNT_MINOR = 50_000


@dataclass(frozen=True)
class ClockJump:
    name: str
    low_ms: int
    high_ms: int
    once: bool = False  # at most once per run (keeps a run well inside the 72 h key retention)


CLOCK_JUMPS_MS = (
    ClockJump("latency", 100, 5_000),
    ClockJump("past_lease", 31_000, 90_000),
    ClockJump("past_backoff", 5 * 60_000, 2 * 3_600_000),
    ClockJump("past_gateway_key_retention", 24 * 3_600_000, 26 * 3_600_000, once=True),
)

# action -> weight; actions without a candidate (nothing parked, no charge to refund) are skipped.
ACTION_WEIGHTS: dict[str, float] = {
    "resume_parked": 8.0,
    "new_charge": 3.0,
    "retry_open": 1.0,
    "refund": 1.5,
    "worker_tick": 1.5,
    "clock_latency": 1.0,
    "clock_past_lease": 0.7,
    "clock_past_backoff": 0.25,
    "clock_past_gateway_key_retention": 0.03,
    "gateway_settle_due": 0.5,
    "tenant_probe": 0.3,
}


def choose_action(rng: random.Random, weights: dict[str, float]) -> str:
    """One action among those offered (name -> weight, in a fixed order)."""
    names = list(weights)
    return rng.choices(names, weights=[weights[name] for name in names], k=1)[0]


def amount_minor(rng: random.Random) -> int:
    return rng.randint(MIN_AMOUNT_MINOR, MAX_AMOUNT_MINOR)
