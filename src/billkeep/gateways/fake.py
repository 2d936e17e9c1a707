"""An in-process payment gateway with fault hooks, for the library's tests, demo and benchmarks.

It behaves like Stripe where it matters to exactly-once: idempotency keys remembered for a
retention window (a repeated key replays the first result; after the window a repeated key makes
a NEW payment, which is the trap billkeep must avoid), payments findable by command reference, and
test payment methods with Stripe's names. State lives in SQLite (a file survives a crashed process,
so crash tests can count payments afterwards; `:memory:` otherwise).

Faults are injected per call by a `FaultPolicy`:
- `fail_before`: nothing happens, the caller is told so (not_executed);
- `unknown_before`: nothing happens, but the caller hears nothing (unknown);
- `fail_after`: the payment happens, then a 5xx (unknown);
- `unknown_after`: the payment happens, then a timeout (unknown).
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from billkeep.domain.clock import Clock, SystemClock
from billkeep.domain.ids import ulid
from billkeep.gateways.protocol import (
    GatewayLookupFailed,
    Outcome,
    PaymentRequest,
    PaymentResult,
    RefundRequest,
    RefundResult,
)

__all__ = ["FakeGateway", "Fault", "FaultPolicy", "NoFaults", "RandomFaults"]

STRIPE_KEY_RETENTION_MS = 24 * 3600 * 1000
_DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
  id TEXT PRIMARY KEY, command_ref TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
  status TEXT NOT NULL, failure_code TEXT, refunded INTEGER NOT NULL DEFAULT 0, created_ms INTEGER
);
CREATE INDEX IF NOT EXISTS payments_by_command ON payments(command_ref);
CREATE TABLE IF NOT EXISTS idem (
  key TEXT PRIMARY KEY, object_id TEXT NOT NULL, created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
  id TEXT PRIMARY KEY, payment_id TEXT NOT NULL, amount INTEGER NOT NULL, status TEXT NOT NULL,
  command_ref TEXT NOT NULL
);
"""


class Fault(StrEnum):
    FAIL_BEFORE = "fail_before"
    UNKNOWN_BEFORE = "unknown_before"
    FAIL_AFTER = "fail_after"
    UNKNOWN_AFTER = "unknown_after"


FaultPolicy = Callable[[str, str], Fault | None]  # (operation, idempotency_key) -> fault


def NoFaults(_operation: str, _key: str) -> Fault | None:
    return None


@dataclass
class RandomFaults:
    """Each call draws a fault from a seeded RNG; thread-safe; `enabled` turns it off at once."""

    seed: int
    probability: float = 0.2
    kinds: tuple[Fault, ...] = tuple(Fault)
    enabled: bool = True

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def __call__(self, _operation: str, _key: str) -> Fault | None:
        with self._lock:
            if not self.enabled or self._rng.random() >= self.probability:
                return None
            return self._rng.choice(self.kinds)


class FakeGateway:
    """A deterministic, fault-injecting stand-in for a Stripe-like gateway."""

    def __init__(
        self,
        path: str = ":memory:",
        *,
        name: str = "fake",
        clock: Clock | None = None,
        faults: FaultPolicy = NoFaults,
        retention_ms: int = STRIPE_KEY_RETENTION_MS,
    ) -> None:
        self._name = name
        self._path = path
        self._clock = clock or SystemClock()
        self.faults = faults
        self._retention_ms = retention_ms
        self._lock = threading.Lock()
        self._shared = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30
        )
        if path != ":memory:":
            self._shared.execute("PRAGMA journal_mode=WAL")
        self._shared.executescript(_SCHEMA)
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def idempotency_retention_ms(self) -> int:
        return self._retention_ms

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._shared.execute("BEGIN IMMEDIATE")
            try:
                yield self._shared
                self._shared.execute("COMMIT")
            except BaseException:
                self._shared.execute("ROLLBACK")
                raise

    def _fault(self, operation: str, key: str) -> Fault | None:
        with self._lock:
            self.calls += 1
        return self.faults(operation, key)

    def _remembered(self, db: sqlite3.Connection, key: str, now_ms: int) -> str | None:
        row = db.execute("SELECT object_id, created_ms FROM idem WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if now_ms - row[1] >= self._retention_ms:
            db.execute("DELETE FROM idem WHERE key = ?", (key,))  # forgotten, as Stripe does
            return None
        return str(row[0])

    def create_payment(self, request: PaymentRequest) -> PaymentResult:
        fault = self._fault("create_payment", request.idempotency_key)
        if fault is Fault.FAIL_BEFORE:
            return PaymentResult(Outcome.NOT_EXECUTED, detail="injected: failed before commit")
        if fault is Fault.UNKNOWN_BEFORE:
            return PaymentResult(Outcome.UNKNOWN, detail="injected: timeout before commit")
        now_ms = self._clock.now_ms()
        with self._tx() as db:
            existing = self._remembered(db, request.idempotency_key, now_ms)
            if existing is None:
                existing = self._make_payment(db, request, now_ms)
                db.execute(
                    "INSERT INTO idem(key, object_id, created_ms) VALUES (?, ?, ?)",
                    (request.idempotency_key, existing, now_ms),
                )
        if fault in (Fault.FAIL_AFTER, Fault.UNKNOWN_AFTER):
            return PaymentResult(Outcome.UNKNOWN, detail=f"injected: {fault.value}")
        return self.retrieve_payment(existing)

    def _make_payment(self, db: sqlite3.Connection, request: PaymentRequest, now_ms: int) -> str:
        reference = f"pi_{ulid(now_ms)}"
        status, failure = "succeeded", None
        if request.payment_method in _DECLINES:
            status, failure = "failed", _DECLINES[request.payment_method][0]
        elif request.payment_method == "pm_card_async":
            status = "processing"
        db.execute(
            "INSERT INTO payments(id, command_ref, amount, currency, status, failure_code, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                reference,
                request.command_ref,
                request.amount_minor,
                request.currency,
                status,
                failure,
                now_ms,
            ),
        )
        return reference

    def _result(self, row: tuple[str, str, int, str, str, str | None]) -> PaymentResult:
        reference, command_ref, amount, currency, status, failure_code = row
        outcome = {"succeeded": Outcome.SUCCEEDED, "failed": Outcome.DECLINED}.get(
            status, Outcome.PROCESSING
        )
        message = next((m for c, m in _DECLINES.values() if c == failure_code), None)
        return PaymentResult(
            outcome, reference, amount, currency, failure_code, message, command_ref=command_ref
        )

    def retrieve_payment(self, reference: str) -> PaymentResult:
        with self._lock:
            row = self._shared.execute(
                "SELECT id, command_ref, amount, currency, status, failure_code FROM payments WHERE id = ?",
                (reference,),
            ).fetchone()
        if row is None:
            raise GatewayLookupFailed(f"no payment {reference}")
        return self._result(row)

    def find_payments(self, command_ref: str) -> list[PaymentResult]:
        if self._fault("find_payments", command_ref) in (Fault.FAIL_BEFORE, Fault.UNKNOWN_BEFORE):
            raise GatewayLookupFailed("injected: lookup failed")
        with self._lock:
            rows = self._shared.execute(
                "SELECT id, command_ref, amount, currency, status, failure_code FROM payments"
                " WHERE command_ref = ? ORDER BY id",
                (command_ref,),
            ).fetchall()
        return [self._result(r) for r in rows]

    def settle(self, reference: str, succeeded: bool = True) -> None:
        """Finish an asynchronous (processing) payment."""
        with self._tx() as db:
            db.execute(
                "UPDATE payments SET status = ? WHERE id = ? AND status = 'processing'",
                ("succeeded" if succeeded else "failed", reference),
            )

    def create_refund(self, request: RefundRequest) -> RefundResult:
        fault = self._fault("create_refund", request.idempotency_key)
        if fault is Fault.FAIL_BEFORE:
            return RefundResult(Outcome.NOT_EXECUTED, detail="injected: failed before commit")
        if fault is Fault.UNKNOWN_BEFORE:
            return RefundResult(Outcome.UNKNOWN, detail="injected: timeout before commit")
        now_ms = self._clock.now_ms()
        with self._tx() as db:
            refund_id = self._remembered(db, request.idempotency_key, now_ms)
            if refund_id is None:
                refund_id = self._make_refund(db, request)
                if refund_id is None:
                    return RefundResult(Outcome.DECLINED, failure_code="amount_too_large")
                db.execute(
                    "INSERT INTO idem(key, object_id, created_ms) VALUES (?, ?, ?)",
                    (request.idempotency_key, refund_id, now_ms),
                )
            amount = db.execute("SELECT amount FROM refunds WHERE id = ?", (refund_id,)).fetchone()[
                0
            ]
        if fault in (Fault.FAIL_AFTER, Fault.UNKNOWN_AFTER):
            return RefundResult(Outcome.UNKNOWN, detail=f"injected: {fault.value}")
        return RefundResult(Outcome.SUCCEEDED, refund_id, int(amount))

    def _make_refund(self, db: sqlite3.Connection, request: RefundRequest) -> str | None:
        row = db.execute(
            "SELECT amount, refunded, status FROM payments WHERE id = ?",
            (request.payment_reference,),
        ).fetchone()
        if row is None or row[2] != "succeeded" or row[1] + request.amount_minor > row[0]:
            return None
        refund_id = f"re_{ulid()}"
        db.execute(
            "INSERT INTO refunds(id, payment_id, amount, status, command_ref)"
            " VALUES (?, ?, ?, 'succeeded', ?)",
            (refund_id, request.payment_reference, request.amount_minor, request.command_ref),
        )
        db.execute(
            "UPDATE payments SET refunded = refunded + ? WHERE id = ?",
            (request.amount_minor, request.payment_reference),
        )
        return refund_id

    def find_refunds(self, payment_reference: str, command_ref: str) -> list[RefundResult]:
        if self._fault("find_refunds", command_ref) in (Fault.FAIL_BEFORE, Fault.UNKNOWN_BEFORE):
            raise GatewayLookupFailed("injected: lookup failed")
        with self._lock:
            rows = self._shared.execute(
                "SELECT id, amount FROM refunds WHERE payment_id = ? AND command_ref = ? ORDER BY id",
                (payment_reference, command_ref),
            ).fetchall()
        return [RefundResult(Outcome.SUCCEEDED, str(r[0]), int(r[1])) for r in rows]

    # --- inspection, for tests and the demo ------------------------------------------------------
    def succeeded_by_command(self) -> dict[str, int]:
        with self._lock:
            rows = self._shared.execute(
                "SELECT command_ref, COUNT(*) FROM payments WHERE status = 'succeeded' GROUP BY command_ref"
            ).fetchall()
        return {str(c): int(n) for c, n in rows}

    def refunded_by_payment(self) -> dict[str, int]:
        with self._lock:
            rows = self._shared.execute(
                "SELECT id, refunded FROM payments WHERE refunded > 0"
            ).fetchall()
        return {str(p): int(n) for p, n in rows}

    def payment_count(self) -> int:
        with self._lock:
            return int(self._shared.execute("SELECT COUNT(*) FROM payments").fetchone()[0])
