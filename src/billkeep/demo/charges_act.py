"""Act 1: a burst of charges with duplicate retries and gateway faults, from several threads.

Every number printed is computed from the database and the gateway's own records afterwards;
nothing here assumes the engine is right.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import sqlalchemy as sa

from billkeep.domain.commands import FINAL_STATES
from billkeep.domain.errors import BillkeepError, IdempotencyKeyInUse
from billkeep.engine.service import Billkeep
from billkeep.engine.worker import RecoveryWorker
from billkeep.storage.tables.core import command_transitions, commands

__all__ = ["ChargeBurst", "ChargeBurstReport", "run_charge_burst"]

PAYMENT_METHODS = (
    ("pm_card_visa", 80),
    ("pm_card_chargeDeclined", 8),
    ("pm_card_chargeDeclinedInsufficientFunds", 6),
    ("pm_card_async", 6),
)
MAX_RECOVERY_S = 60.0


@dataclass
class ChargeBurst:
    customers: int = 20
    intents: int = 200
    max_retries_per_intent: int = 3
    threads: int = 8
    seed: int = 7


@dataclass
class ChargeBurstReport:
    responses: Counter[int] = field(default_factory=Counter)
    replays: int = 0
    in_use_conflicts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    commands_by_state: dict[str, int] = field(default_factory=dict)
    recovered_unknowns: int = 0
    intents: int = 0
    intents_paid_once: int = 0
    intents_paid_twice_or_more: int = 0
    local_succeeded: int = 0
    trial_balance: list[dict[str, object]] = field(default_factory=list)
    non_final_left: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _create_customers(
    bk: Billkeep, tenant_id: str, plan: ChargeBurst, rng: random.Random
) -> list[str]:
    methods = [m for m, _ in PAYMENT_METHODS]
    weights = [w for _, w in PAYMENT_METHODS]
    ids = []
    for index in range(plan.customers):
        method = rng.choices(methods, weights)[0]
        result = bk.create_customer(
            tenant_id,
            {"email": f"customer{index}@example.com", "payment_method": method},
            f"demo-cus-{index}",
        )
        ids.append(str(result.body()["id"]))
    return ids


def _submit(
    bk: Billkeep, tenant_id: str, key: str, request: dict[str, object], report: ChargeBurstReport
) -> None:
    try:
        result = bk.create_charge(tenant_id, request, key)
    except IdempotencyKeyInUse:
        with report.lock:
            report.in_use_conflicts += 1
        return
    except BillkeepError as exc:
        with report.lock:
            report.errors[exc.code] += 1
        return
    with report.lock:
        report.responses[result.status] += 1
        report.replays += int(result.replayed)


def run_charge_burst(
    bk: Billkeep,
    tenant_id: str,
    plan: ChargeBurst,
    *,
    disable_faults: Callable[[], None],
    settle_async: Callable[[], None],
    succeeded_by_command: Callable[[], dict[str, int]],
    on_progress: Callable[[int], None] = lambda _n: None,
) -> ChargeBurstReport:
    rng = random.Random(plan.seed)
    report = ChargeBurstReport()
    customer_ids = _create_customers(bk, tenant_id, plan, rng)
    submissions = []
    for index in range(plan.intents):
        request = {
            "customer_id": rng.choice(customer_ids),
            "amount": rng.randrange(100, 50_000),
            "currency": rng.choice(("usd", "usd", "eur", "jpy")),
            "description": f"demo intent {index}",
        }
        copies = rng.randint(1, plan.max_retries_per_intent)
        submissions.extend([(f"demo-charge-{index}", request)] * copies)
    rng.shuffle(submissions)  # duplicates of one intent may run at the same time on two threads
    with ThreadPoolExecutor(plan.threads) as pool:
        futures = [
            pool.submit(_submit, bk, tenant_id, key, req, report) for key, req in submissions
        ]
        for done, future in enumerate(futures, start=1):
            future.result()
            on_progress(done)
    disable_faults()
    _recover(bk, settle_async)
    _audit(bk, tenant_id, report, succeeded_by_command)
    return report


def _recover(bk: Billkeep, settle_async: Callable[[], None]) -> None:
    """Faults are off: run the recovery worker until every command is final (bounded).

    Asynchronous payments settle at the gateway in the meantime (as a bank would, later)."""
    worker = RecoveryWorker(bk, actor="demo-worker")
    deadline = time.monotonic() + MAX_RECOVERY_S
    while time.monotonic() < deadline:
        settle_async()
        worker.drain()
        if _non_final(bk) == 0:
            return
        time.sleep(0.2)


def _non_final(bk: Billkeep) -> int:
    final = [s.value for s in FINAL_STATES]
    return int(
        bk.db.run_read(
            lambda c: c.execute(
                sa.select(sa.func.count())
                .select_from(commands)
                .where(commands.c.state.not_in(final))
            ).scalar_one()
        )
    )


def _audit(
    bk: Billkeep,
    tenant_id: str,
    report: ChargeBurstReport,
    succeeded_by_command: Callable[[], dict[str, int]],
) -> None:
    def read(conn: sa.Connection) -> tuple[list[tuple[str, str]], int]:
        rows = conn.execute(
            sa.select(commands.c.id, commands.c.state).where(
                commands.c.tenant_id == tenant_id, commands.c.operation == "charge.create"
            )
        ).all()
        recovered = conn.execute(
            sa.select(sa.func.count(sa.distinct(command_transitions.c.command_id))).where(
                command_transitions.c.tenant_id == tenant_id,
                command_transitions.c.to_state == "awaiting_outcome",
            )
        ).scalar_one()
        return [(str(i), str(s)) for i, s in rows], int(recovered)

    rows, recovered = bk.db.run_read(read)
    paid = succeeded_by_command()
    report.intents = len(rows)
    report.commands_by_state = dict(Counter(state for _, state in rows))
    report.recovered_unknowns = recovered
    report.intents_paid_once = sum(1 for cid, _ in rows if paid.get(cid) == 1)
    report.intents_paid_twice_or_more = sum(1 for cid, _ in rows if paid.get(cid, 0) > 1)
    report.local_succeeded = sum(1 for _, state in rows if state == "succeeded")
    report.trial_balance = bk.queries.trial_balance(tenant_id)["currencies"]
    report.non_final_left = _non_final(bk)
