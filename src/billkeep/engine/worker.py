"""The recovery worker: resumes abandoned and suspended commands, and frees expired keys.

Many workers on many machines may run at once: a claim is `FOR UPDATE SKIP LOCKED` inside a CTE on
PostgreSQL (each command goes to one worker), and a fencing token makes a worker that lost its
lease unable to commit anything. The database constraints, not the lease, guarantee exactly once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.commands import FINAL_STATES, CommandState
from billkeep.domain.errors import BillkeepError, LeaseLost
from billkeep.engine import command_store as store
from billkeep.engine.executor import default_actor
from billkeep.engine.service import Billkeep
from billkeep.storage.tables.core import commands, idempotency_keys

__all__ = ["RecoveryWorker", "WorkerStats"]

logger = logging.getLogger("billkeep.worker")

IDLE_SLEEP_MS = 500
MAX_IDLE_SLEEP_MS = 5_000
_NON_FINAL = [s.value for s in CommandState if s not in FINAL_STATES]


@dataclass
class WorkerStats:
    claimed: int = 0
    finished: int = 0
    suspended: int = 0
    errors: int = 0
    keys_freed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class RecoveryWorker:
    def __init__(self, billkeep: Billkeep, actor: str | None = None) -> None:
        self.billkeep = billkeep
        self.actor = actor or default_actor("worker")
        self.stats = WorkerStats()
        self.stop_event = threading.Event()
        # Other areas' background duties (webhook processing, ...) run once per round; each
        # returns how much work it did, so an idle worker backs off only when all were idle.
        self.periodic_tasks: list[Callable[[], int]] = []

    def _claimable(self, now_ms: int) -> sa.ColumnElement[bool]:
        return sa.and_(
            commands.c.state.in_(_NON_FINAL),
            sa.or_(
                commands.c.lease_expires_at_ms.is_(None), commands.c.lease_expires_at_ms < now_ms
            ),
            sa.or_(
                commands.c.next_attempt_at_ms.is_(None), commands.c.next_attempt_at_ms <= now_ms
            ),
        )

    def claim_batch(self) -> list[tuple[str, str, int]]:
        """Lease up to a batch of recoverable commands; returns (tenant_id, command_id, token)."""
        config = self.billkeep.services.config
        now_ms = self.billkeep.clock.now_ms()

        def work(conn: Connection) -> list[tuple[str, str, int]]:
            if conn.dialect.name == "postgresql":
                batch = store.claim_recoverable_pg(
                    conn,
                    self._claimable(now_ms),
                    self.actor,
                    now_ms,
                    config.lease_ms,
                    config.worker_batch_size,
                )
                return [(c.tenant_id, c.id, c.fencing_token) for c in batch]
            # SQLite: BEGIN IMMEDIATE already made this transaction the only writer.
            query = (
                sa.select(commands.c.tenant_id, commands.c.id)
                .where(self._claimable(now_ms))
                .order_by(commands.c.next_attempt_at_ms)
                .limit(config.worker_batch_size)
            )
            picked = conn.execute(query).all()
            claimed = []
            for tenant_id, command_id in picked:
                row = store.lock_command(conn, tenant_id, command_id)
                if row is None or row.is_final or row.lease_live(now_ms):
                    continue
                token = store.claim(conn, row, self.actor, now_ms, config.lease_ms)
                claimed.append((tenant_id, command_id, token))
            return claimed

        return self.billkeep.db.run_write(work)

    def run_once(self) -> int:
        """Claim one batch and drive each command as far as it goes. Returns how many were claimed."""
        claimed = self.claim_batch()
        self.stats.claimed += len(claimed)
        for tenant_id, command_id, token in claimed:
            if self.stop_event.is_set():
                break  # unfinished claims expire and go to another worker
            self._resume(tenant_id, command_id, token)
        return len(claimed)

    def _resume(self, tenant_id: str, command_id: str, token: int) -> None:
        try:
            result = self.billkeep.executor.resume(tenant_id, command_id, token, self.actor)
        except LeaseLost:
            logger.info("lost the lease on %s; another worker has it", command_id)
            return
        except BillkeepError as exc:
            self.stats.errors += 1
            logger.warning("command %s: %s", command_id, exc)
            return
        key = result.state.value
        self.stats.outcomes[key] = self.stats.outcomes.get(key, 0) + 1
        if result.final:
            self.stats.finished += 1
        else:
            self.stats.suspended += 1

    def sweep_keys(self) -> int:
        """Free idempotency keys past their retention. Commands and history are never deleted."""
        batch = self.billkeep.services.config.sweeper_batch_size
        now_ms = self.billkeep.clock.now_ms()

        def work(conn: Connection) -> int:
            expired = conn.execute(
                sa.select(
                    idempotency_keys.c.tenant_id,
                    idempotency_keys.c.operation,
                    idempotency_keys.c.idempotency_key,
                )
                .where(idempotency_keys.c.expires_at_ms <= now_ms)
                .limit(batch)
            ).all()
            for tenant_id, operation, key in expired:
                conn.execute(
                    idempotency_keys.delete().where(
                        idempotency_keys.c.tenant_id == tenant_id,
                        idempotency_keys.c.operation == operation,
                        idempotency_keys.c.idempotency_key == key,
                        idempotency_keys.c.expires_at_ms <= now_ms,
                    )
                )
            return len(expired)

        freed = self.billkeep.db.run_write(work)
        self.stats.keys_freed += freed
        return freed

    def drain(self, max_rounds: int = 100) -> None:
        """Run until nothing is claimable now (tests, the demo)."""
        for _ in range(max_rounds):
            if self.run_once() == 0:
                return

    def run_forever(self) -> None:
        idle_ms = IDLE_SLEEP_MS
        while not self.stop_event.is_set():
            try:
                worked = self.run_once()
                self.sweep_keys()
                worked += self.run_periodic_tasks()
            except BillkeepError as exc:  # e.g. database unavailable: back off and try again
                logger.warning("worker round failed: %s", exc)
                worked = 0
            idle_ms = IDLE_SLEEP_MS if worked else min(MAX_IDLE_SLEEP_MS, idle_ms * 2)
            if not worked:
                self.stop_event.wait(idle_ms / 1000)

    def run_periodic_tasks(self) -> int:
        done = 0
        for task in self.periodic_tasks:
            try:
                done += task()
            except BillkeepError as exc:
                logger.warning("periodic task %s failed: %s", getattr(task, "__name__", task), exc)
        return done

    def stop(self) -> None:
        self.stop_event.set()
