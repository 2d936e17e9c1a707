"""Fault injection: which request fails how, decided by a seeded RNG.

Rules match `{"method", "path"}`: a missing field matches anything; `path` matches exactly, or as a
prefix when it ends with `*` (`/v1/payment_intents*` covers `/v1/payment_intents/pi_.../...`).
Only Stripe API requests (`/v1/...`) are subject to faults, never the control API.

Determinism: every (re)configuration reseeds two RNG streams from the plan's `seed` (else the
server's `--seed`), one for request faults and one for webhook faults. Given the same plan and the
same sequence of requests, the same requests fail the same way. Concurrent requests reach the RNG
in an order the OS scheduler picks, so only sequential traffic replays exactly.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from billkeep.gateways.simulator.errors import JsonObject
from billkeep.gateways.simulator.limits import (
    DEFAULT_HOLD_MS,
    MAX_FAULT_RULES,
    MAX_HOLD_MS,
    MAX_LATENCY_MS,
)

__all__ = ["FaultDecision", "FaultInjector", "FaultKind", "FaultRule", "WebhookFaults"]

_T = TypeVar("_T")
_DECISION_LOG_SIZE = 1_000
_ERROR_STATUS_CODES = (500, 502, 503, 504)


class FaultKind(StrEnum):
    TIMEOUT_AFTER_COMMIT = "timeout_after_commit"
    ERROR_BEFORE_COMMIT = "error_before_commit"
    ERROR_AFTER_COMMIT = "error_after_commit"
    LATENCY = "latency"


@dataclass(slots=True)
class FaultRule:
    kind: FaultKind
    method: str | None = None
    path: str | None = None
    probability: float = 1.0
    count: int | None = None  # fires at most this many times; None: unlimited
    latency_ms: int = 0
    hold_ms: int = DEFAULT_HOLD_MS  # timeout_after_commit: how long the response is withheld
    status_code: int = 500  # error_before_commit / error_after_commit
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is None:
            return True
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def describe(self) -> JsonObject:
        return {
            "match": {"method": self.method, "path": self.path},
            "fault": self.kind.value,
            "probability": self.probability,
            "count": self.count,
            "latency_ms": self.latency_ms,
            "hold_ms": self.hold_ms,
            "status_code": self.status_code,
            "fired": self.fired,
        }


@dataclass(frozen=True, slots=True)
class WebhookFaults:
    duplicate_probability: float = 0.0
    shuffle: bool = False
    delay_ms: tuple[int, int] = (0, 0)
    drop_first_attempt_probability: float = 0.0

    def describe(self) -> JsonObject:
        return {
            "duplicate_probability": self.duplicate_probability,
            "shuffle": self.shuffle,
            "delay_ms": list(self.delay_ms),
            "drop_first_attempt_probability": self.drop_first_attempt_probability,
        }


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to one request: extra latency first, then at most one failure mode."""

    latency_ms: int = 0
    kind: FaultKind | None = None
    hold_ms: int = 0
    status_code: int = 500
    rules: tuple[int, ...] = field(default_factory=tuple)

    @property
    def is_noop(self) -> bool:
        return self.latency_ms == 0 and self.kind is None


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number within 0..1")
    return float(value)


def _bounded_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer within {low}..{high}")
    return value


def _parse_rule(raw: Any) -> FaultRule:
    if not isinstance(raw, dict):
        raise ValueError("each rule must be an object")
    unknown = set(raw) - {
        "match",
        "fault",
        "probability",
        "count",
        "latency_ms",
        "hold_ms",
        "status_code",
    }
    if unknown:
        raise ValueError(f"unknown rule fields: {sorted(unknown)}")
    match = raw.get("match") or {}
    if not isinstance(match, dict) or set(match) - {"method", "path"}:
        raise ValueError("match takes only method and path")
    try:
        kind = FaultKind(str(raw.get("fault")))
    except ValueError as exc:
        raise ValueError(f"unknown fault {raw.get('fault')!r}") from exc
    count = raw.get("count")
    status_code = raw.get("status_code", 500)
    if status_code not in _ERROR_STATUS_CODES:
        raise ValueError(f"status_code must be one of {_ERROR_STATUS_CODES}")
    return FaultRule(
        kind=kind,
        method=match.get("method"),
        path=match.get("path"),
        probability=_probability(raw.get("probability", 1.0), "probability"),
        count=None if count is None else _bounded_int(count, "count", 1, 10**9),
        latency_ms=_bounded_int(raw.get("latency_ms", 0), "latency_ms", 0, MAX_LATENCY_MS),
        hold_ms=_bounded_int(raw.get("hold_ms", DEFAULT_HOLD_MS), "hold_ms", 0, MAX_HOLD_MS),
        status_code=status_code,
    )


def _parse_webhook_faults(raw: Any) -> WebhookFaults:
    if raw is None:
        return WebhookFaults()
    if not isinstance(raw, dict):
        raise ValueError("webhooks must be an object")
    unknown = set(raw) - {
        "duplicate_probability",
        "shuffle",
        "delay_ms",
        "drop_first_attempt_probability",
    }
    if unknown:
        raise ValueError(f"unknown webhook fault fields: {sorted(unknown)}")
    delay = raw.get("delay_ms") or [0, 0]
    if not isinstance(delay, list) or len(delay) != 2:
        raise ValueError("delay_ms must be [min, max]")
    low = _bounded_int(delay[0], "delay_ms[0]", 0, MAX_LATENCY_MS)
    high = _bounded_int(delay[1], "delay_ms[1]", low, MAX_LATENCY_MS)
    shuffle = raw.get("shuffle", False)
    if not isinstance(shuffle, bool):
        raise ValueError("shuffle must be a boolean")
    return WebhookFaults(
        duplicate_probability=_probability(
            raw.get("duplicate_probability", 0), "duplicate_probability"
        ),
        shuffle=shuffle,
        delay_ms=(low, high),
        drop_first_attempt_probability=_probability(
            raw.get("drop_first_attempt_probability", 0), "drop_first_attempt_probability"
        ),
    )


class FaultInjector:
    """The active fault plan and its seeded RNGs (thread-safe; in memory, reset by a restart)."""

    def __init__(self, seed: int | None = None) -> None:
        self._default_seed = seed
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._webhooks = WebhookFaults()
        self._decisions: deque[JsonObject] = deque(maxlen=_DECISION_LOG_SIZE)
        self._seed: int | None = None
        self._request_rng = random.Random()
        self._webhook_rng = random.Random()
        self._reseed(seed)

    def _reseed(self, seed: int | None) -> None:
        self._seed = seed if seed is not None else random.SystemRandom().randrange(2**63)
        # String seeds hash with SHA-512: stable across processes, unlike hash().
        self._request_rng = random.Random(f"{self._seed}:requests")
        self._webhook_rng = random.Random(f"{self._seed}:webhooks")

    def configure(self, plan: Any) -> JsonObject:
        """Replace the plan (validated first; ValueError leaves the old plan in place)."""
        if not isinstance(plan, dict) or set(plan) - {"seed", "rules", "webhooks"}:
            raise ValueError("a fault plan is an object with seed, rules and webhooks")
        seed = plan.get("seed")
        if seed is not None:
            seed = _bounded_int(seed, "seed", 0, 2**63 - 1)
        raw_rules = plan.get("rules") or []
        if not isinstance(raw_rules, list) or len(raw_rules) > MAX_FAULT_RULES:
            raise ValueError(f"rules must be a list of at most {MAX_FAULT_RULES}")
        rules = [_parse_rule(raw) for raw in raw_rules]
        webhooks = _parse_webhook_faults(plan.get("webhooks"))
        with self._lock:
            self._rules = rules
            self._webhooks = webhooks
            self._decisions.clear()
            self._reseed(seed if seed is not None else self._default_seed)
        return self.describe()

    def clear(self) -> None:
        with self._lock:
            self._rules = []
            self._webhooks = WebhookFaults()
            self._decisions.clear()

    def decide(self, method: str, path: str) -> FaultDecision:
        with self._lock:
            latency_ms = 0
            chosen: FaultRule | None = None
            fired: list[int] = []
            for index, rule in enumerate(self._rules):
                if rule.exhausted() or not rule.matches(method, path):
                    continue
                if rule.kind is not FaultKind.LATENCY and chosen is not None:
                    continue  # one failure mode per request; the first firing rule wins
                # Draw for every eligible rule, even at probability 1, so the stream stays aligned.
                if self._request_rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                fired.append(index)
                if rule.kind is FaultKind.LATENCY:
                    latency_ms += rule.latency_ms
                else:
                    chosen = rule
            decision = FaultDecision(
                latency_ms=latency_ms,
                kind=None if chosen is None else chosen.kind,
                hold_ms=0 if chosen is None else chosen.hold_ms,
                status_code=500 if chosen is None else chosen.status_code,
                rules=tuple(fired),
            )
            if self._rules:
                self._decisions.append(
                    {
                        "method": method,
                        "path": path,
                        "fault": decision.kind,
                        "latency_ms": latency_ms,
                    }
                )
            return decision

    @property
    def webhooks(self) -> WebhookFaults:
        with self._lock:
            return self._webhooks

    def webhook_roll(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._webhook_rng.random() < probability

    def webhook_delay_ms(self) -> int:
        low, high = self.webhooks.delay_ms
        if high <= 0:
            return 0
        with self._lock:
            return self._webhook_rng.randint(low, high)

    def shuffle(self, items: list[_T]) -> None:
        with self._lock:
            self._webhook_rng.shuffle(items)

    def describe(self) -> JsonObject:
        with self._lock:
            return {
                "seed": self._seed,
                "rules": [rule.describe() for rule in self._rules],
                "webhooks": self._webhooks.describe(),
                "decisions": list(self._decisions),
            }
