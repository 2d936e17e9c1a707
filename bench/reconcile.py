"""Benchmark: reconcile N gateway records (default 1,000,000) against N ledger charges.

Gateway records are generated straight into a gateway simulator's store (succeeded payment
intents with their charge and balance transaction, each carrying metadata[billkeep_command]);
ledger charges are bulk-inserted into the billkeep database (PostgreSQL by default). The
reconciliation reads the simulator store in-process (SimulatorStoreSource), stages it, streams
both sides in match-key order and matches them. Reported: wall time per phase and peak RSS.

    .venv/bin/python -m bench.reconcile --count 1000000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_reconcile

The database must exist and be empty of this benchmark's tenant; it is migrated first.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from billkeep.domain.clock import ManualClock
from billkeep.gateways.simulator import SimConfig, SimStore, SimulatorCore
from billkeep.gateways.simulator.cards import find_card
from billkeep.gateways.simulator.fees import FeeSchedule
from billkeep.gateways.simulator.objects import (
    balance_transaction_object,
    charge_object,
    payment_intent_object,
)
from billkeep.reconciliation.runner import ReconciliationConfig, ReconciliationRunner
from billkeep.reconciliation.sources import SimulatorStoreSource
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from billkeep.storage.tables.core import charges

CHUNK = 20_000
AMOUNT_MINOR = 1000
START_MS = 1_767_225_600_000


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def command_of(index: int) -> str:
    return f"cmd_bench{index:010d}"


def generate_gateway(core: SimulatorCore, count: int) -> None:
    visa = find_card("pm_card_visa")
    assert visa is not None
    for start in range(0, count, CHUNK):
        with core.store.write() as tx:
            w = core._writer(tx)
            for index in range(start, min(count, start + CHUNK)):
                created_s = START_MS // 1000 + index % 86_400
                intent_id, seq = w.new_id("pi")
                intent = payment_intent_object(
                    intent_id,
                    created_s,
                    amount=AMOUNT_MINOR,
                    currency="usd",
                    customer=None,
                    payment_method=visa.payment_method,
                    description=None,
                    metadata={"billkeep_command": command_of(index)},
                    status="succeeded",
                )
                charge_id, charge_seq = w.new_id("ch")
                txn_id, txn_seq = w.new_id("txn")
                charge = charge_object(
                    charge_id,
                    created_s,
                    intent=intent,
                    card=visa,
                    status="succeeded",
                    balance_transaction=txn_id,
                )
                txn = balance_transaction_object(
                    txn_id,
                    created_s,
                    amount=AMOUNT_MINOR,
                    fee=0,
                    currency="usd",
                    source=charge_id,
                    type_="charge",
                    description=None,
                )
                intent.update(latest_charge=charge_id, amount_received=AMOUNT_MINOR)
                w.insert("payment_intent", intent, seq)
                w.insert("charge", charge, charge_seq, ref=intent_id)
                w.insert("balance_transaction", txn, txn_seq, ref=charge_id, type_="charge")


def generate_ledger(db: Database, tenant_id: str, count: int) -> None:
    """N succeeded charges, one per command, COPYed (PostgreSQL) or bulk-inserted (SQLite)."""
    columns = [c.name for c in charges.columns]
    for start in range(0, count, CHUNK):
        rows = [
            {
                "tenant_id": tenant_id,
                "id": f"ch_bench{i:010d}",
                "command_id": command_of(i),
                "customer_id": "cus_bench",
                "amount_minor": AMOUNT_MINOR,
                "currency": "usd",
                "status": "succeeded",
                "amount_refunded_minor": 0,
                "gateway": "gw_bench",
                "gateway_reference": None,
                "payment_method": "pm_card_visa",
                "failure_code": None,
                "failure_message": None,
                "description": None,
                "metadata": "{}",
                "current_attempt": 1,
                "invoice_id": None,
                "created_at_ms": START_MS + (i % 86_400) * 1000,
                "updated_at_ms": START_MS,
            }
            for i in range(start, min(count, start + CHUNK))
        ]
        with db.write() as conn:
            if conn.dialect.name != "postgresql":
                conn.execute(charges.insert(), rows)
                continue
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY charges ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(tuple(row[c] for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--sim-db", default=None, help="reuse a generated simulator store")
    parser.add_argument("--tenant", default="ten_bench")
    args = parser.parse_args()

    db = Database(args.database_url)
    upgrade_to_head(db)
    sim_path = args.sim_db or str(Path(tempfile.mkdtemp()) / "sim.db")
    clock = ManualClock(START_MS + 2 * 86_400_000)
    core = SimulatorCore(SimStore(sim_path), clock, SimConfig(fees=FeeSchedule(0, 0), seed=1))

    t0 = time.perf_counter()
    if args.sim_db is None:
        generate_gateway(core, args.count)
    t1 = time.perf_counter()
    generate_ledger(db, args.tenant, args.count)
    if db.dialect == "postgresql":
        # As autovacuum would for a table that grew over months (the bench fills it in seconds).
        with db.write() as conn:
            conn.exec_driver_sql("ANALYZE charges")
    t2 = time.perf_counter()
    print(f"setup: gateway {t1 - t0:.1f}s, ledger {t2 - t1:.1f}s, rss {peak_rss_mb():.0f} MB")

    runner = ReconciliationRunner(db, clock, ReconciliationConfig())
    window = (START_MS, START_MS + 86_400_000)
    rss_before = peak_rss_mb()
    cpu_before = cpu_s()
    started = time.perf_counter()
    run_id = db.run_write(lambda conn: runner.create_run(conn, args.tenant, "gw_bench", *window))
    phases: dict[str, float] = {}  # phase -> seconds from the start when it last reported

    def progress(phase: str, _done: int) -> None:
        phases[phase] = time.perf_counter() - started

    source = SimulatorStoreSource(core, page_size=10_000)
    summary = runner.run(args.tenant, run_id, source, progress)
    wall = time.perf_counter() - started
    cpu = cpu_s() - cpu_before
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(f"records: {args.count} gateway + {args.count} ledger; database {db.dialect}")
    print(
        f"reconcile wall time: {wall:.1f}s (this process's CPU {cpu:.1f}s); "
        f"peak RSS {peak_rss_mb():.0f} MB (before run {rss_before:.0f} MB)"
    )
    ends = " ".join(f"{phase} done at {at:.1f}s;" for phase, at in phases.items())
    print(f"phases (staging includes reading the gateway): {ends}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"summary: {summary}")


if __name__ == "__main__":
    main()
