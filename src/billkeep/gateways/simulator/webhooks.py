"""Webhook delivery from the persistent outbox: signed POSTs, bounded exponential retries, faults.

Outbox rows are written in the same transaction as the effect that caused the event, so a crash
never loses an event; delivery is at-least-once (a crash between the POST and recording its
success re-sends it, as Stripe does). Receivers must dedupe by event id.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable

from billkeep.gateways.signing import sign_header
from billkeep.gateways.simulator.core import SimulatorCore
from billkeep.gateways.simulator.errors import JsonObject
from billkeep.gateways.simulator.faults import FaultInjector
from billkeep.gateways.simulator.limits import (
    WEBHOOK_BATCH_SIZE,
    WEBHOOK_MAX_ATTEMPTS,
    WEBHOOK_RETRY_BASE_MS,
    WEBHOOK_RETRY_MAX_MS,
    WEBHOOK_TIMEOUT_MS,
)

__all__ = ["BackgroundWorker", "Transport", "WebhookDispatcher", "backoff_ms", "httpx_transport"]

logger = logging.getLogger(__name__)

# (url, body, headers) -> HTTP status; raises on network failure. Injectable for in-process runs.
Transport = Callable[[str, bytes, dict[str, str]], int]
_MAX_LOG_ENTRIES = 1_000
_PURGE_INTERVAL_MS = 60_000  # expired idempotency keys are also ignored on lookup; this frees space


def httpx_transport(timeout_ms: int = WEBHOOK_TIMEOUT_MS) -> Transport:
    import httpx  # imported lazily: it is the slowest import of a simulator start

    client = httpx.Client(timeout=timeout_ms / 1000)

    def send(url: str, body: bytes, headers: dict[str, str]) -> int:
        return int(client.post(url, content=body, headers=headers).status_code)

    return send


def backoff_ms(attempt: int, base_ms: int, max_ms: int) -> int:
    """Delay after failed attempt number `attempt` (1-based): base, 2*base, 4*base ... capped."""
    return min(max_ms, base_ms << (attempt - 1))


class WebhookDispatcher:
    def __init__(
        self,
        core: SimulatorCore,
        faults: FaultInjector,
        secret: str,
        *,
        transport: Transport | None = None,
        max_attempts: int = WEBHOOK_MAX_ATTEMPTS,
        retry_base_ms: int = WEBHOOK_RETRY_BASE_MS,
        retry_max_ms: int = WEBHOOK_RETRY_MAX_MS,
    ) -> None:
        assert max_attempts >= 1, "at least one attempt"
        self._core = core
        self._faults = faults
        self._secret = secret
        self._transport = transport or httpx_transport()
        self._max_attempts = max_attempts
        self._retry_base_ms = retry_base_ms
        self._retry_max_ms = retry_max_ms
        # One delivery pass at a time: the worker and a flush must not both send the same row.
        self._pass_lock = threading.Lock()

    def deliver_due(self) -> int:
        """One pass over deliveries whose time has come; returns how many were attempted."""
        with self._pass_lock:
            return self._deliver(self._core.clock.now_ms(), apply_delay=True)

    def flush(self) -> int:
        """Attempt every pending delivery now, ignoring retry times and delay faults."""
        with self._pass_lock:
            return self._deliver(None, apply_delay=False)

    def _deliver(self, due_before_ms: int | None, *, apply_delay: bool) -> int:
        with self._core.store.read() as tx:
            rows = tx.pending_deliveries(due_before_ms, WEBHOOK_BATCH_SIZE)
        if apply_delay:
            rows = self._postpone_undelayed(rows)
        if self._faults.webhooks.shuffle:
            self._faults.shuffle(rows)
        for row in rows:
            self._attempt(row)
        return len(rows)

    def _postpone_undelayed(self, rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
        """Apply the delay fault once per delivery, before its first attempt."""
        ready = []
        for row in rows:
            delay_ms = 0 if row["delay_decided"] else self._faults.webhook_delay_ms()
            if delay_ms > 0:
                with self._core.store.write() as tx:
                    tx.postpone_delivery(row["id"], self._core.clock.now_ms() + delay_ms)
            else:
                ready.append(row)
        return ready

    def _send(self, url: str, body: bytes) -> tuple[int | None, str | None]:
        now_s = self._core.clock.now_ms() // 1000
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": sign_header(body, [self._secret], now_s),
        }
        try:
            return self._transport(url, body, headers), None
        except Exception as exc:  # any network failure is just a failed attempt
            return None, f"{type(exc).__name__}: {exc}"

    def _attempt(self, row: sqlite3.Row) -> None:
        event = self._core.retrieve("event", row["event_id"])
        body = json.dumps(event, separators=(",", ":")).encode()
        attempt = int(row["attempts"]) + 1
        faults = self._faults.webhooks
        status_code: int | None
        error: str | None
        if attempt == 1 and self._faults.webhook_roll(faults.drop_first_attempt_probability):
            status_code, error, outcome = None, "dropped by fault injection", "dropped"
        else:
            status_code, error = self._send(row["url"], body)
            outcome = (
                "delivered" if status_code is not None and 200 <= status_code < 300 else "failed"
            )
        extra: list[tuple[str, int | None, str | None]] = []
        if outcome != "dropped" and self._faults.webhook_roll(faults.duplicate_probability):
            dup_status, dup_error = self._send(row["url"], body)
            extra.append(("duplicate", dup_status, dup_error))
        self._record(row, attempt, outcome, status_code, error, extra)

    def _record(
        self,
        row: sqlite3.Row,
        attempt: int,
        outcome: str,
        status_code: int | None,
        error: str | None,
        extra: list[tuple[str, int | None, str | None]],
    ) -> None:
        now_ms = self._core.clock.now_ms()
        if outcome == "delivered":
            status, next_ms = "delivered", now_ms
        elif attempt >= self._max_attempts:
            status, next_ms = "failed", now_ms
        else:
            status = "pending"
            next_ms = now_ms + backoff_ms(attempt, self._retry_base_ms, self._retry_max_ms)
        with self._core.store.write() as tx:
            tx.log_attempt(row["id"], row["event_id"], attempt, now_ms, outcome, status_code, error)
            for extra_outcome, extra_status, extra_error in extra:
                tx.log_attempt(
                    row["id"],
                    row["event_id"],
                    attempt,
                    now_ms,
                    extra_outcome,
                    extra_status,
                    extra_error,
                )
            tx.finish_attempt(
                row["id"],
                status=status,
                attempts=attempt,
                next_attempt_ms=next_ms,
                status_code=status_code,
                error=error,
                delivered_ms=now_ms if status == "delivered" else None,
            )

    def log(self, limit: int = _MAX_LOG_ENTRIES) -> JsonObject:
        """The delivery log, newest first, each delivery with every attempt made."""
        with self._core.store.read() as tx:
            deliveries = tx.delivery_log(min(limit, _MAX_LOG_ENTRIES))
            attempts = tx.attempts_for([row["delivery_id"] for row in deliveries])
        by_delivery: dict[int, list[JsonObject]] = {}
        for attempt in attempts:
            by_delivery.setdefault(attempt["delivery_id"], []).append(
                {
                    "attempt": attempt["attempt"],
                    "at_ms": attempt["at_ms"],
                    "outcome": attempt["outcome"],
                    "status_code": attempt["status_code"],
                    "error": attempt["error"],
                }
            )
        data = [
            {**dict(row), "attempt_log": by_delivery.get(row["delivery_id"], [])}
            for row in deliveries
        ]
        return {"object": "list", "data": data}


class BackgroundWorker:
    """Delivers due webhooks and settles due async payments until stopped."""

    def __init__(
        self,
        core: SimulatorCore,
        dispatcher: WebhookDispatcher | None,
        poll_interval_ms: int,
    ) -> None:
        self._core = core
        self._dispatcher = dispatcher
        self._poll_interval_ms = poll_interval_ms
        self._stop = threading.Event()
        self._last_purge_ms = 0
        self._thread = threading.Thread(target=self._run, name="gateway-sim-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_ms: int = 5_000) -> None:
        self._stop.set()
        self._thread.join(timeout_ms / 1000)

    def _purge_now_and_then(self) -> None:
        now_ms = self._core.clock.now_ms()
        if now_ms - self._last_purge_ms >= _PURGE_INTERVAL_MS:
            self._last_purge_ms = now_ms
            self._core.purge_expired_idempotency_keys()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_interval_ms / 1000):
            try:
                self._core.settle_due()
                if self._dispatcher is not None:
                    self._dispatcher.deliver_due()
                self._purge_now_and_then()
            except Exception:  # keep the worker alive; the next pass retries
                logger.exception("gateway simulator background pass failed")
