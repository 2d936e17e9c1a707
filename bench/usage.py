"""Usage ingestion throughput on PostgreSQL: N events in batches of 1000 with 5% duplicates.

Each worker process opens its own Billkeep and ingests its share of batches through
`ingest_usage_events` (the function behind `POST /v1/usage_events`, without HTTP). 5% of each
batch repeats event ids already sent (a client retry), so they must come back as duplicates.

Run: `.venv/bin/python -m bench.usage [--events 1000000] [--workers 2]`. The server comes from
BILLKEEP_TEST_PG_URL (an admin URL); a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

from bench.billing_common import fresh_database, machine_description, setup_tenant
from billkeep.billing.usage_ingest import ingest_usage_events
from billkeep.domain.clock import ManualClock, ms_to_rfc3339
from billkeep.storage.database import Database

BATCH = 1000
DUPLICATE_SHARE = 0.05


def _batch(worker: int, number: int, sub_ids: list[str], at: str) -> list[dict[str, Any]]:
    fresh = int(BATCH * (1 - DUPLICATE_SHARE))
    events = [
        {
            "event_id": f"w{worker}-b{number}-{i}",
            "subscription_id": sub_ids[(number * BATCH + i) % len(sub_ids)],
            "metric": "units",
            "timestamp": at,
            "properties": {"units": 1 + i % 5},
        }
        for i in range(fresh)
    ]
    # Retries of events of the previous batch (or of this one for the first batch).
    source = number - 1 if number else number
    repeats = [
        {**e, "event_id": f"w{worker}-b{source}-{i}"} for i, e in enumerate(events[: BATCH - fresh])
    ]
    return events + repeats


def _work(args: tuple[str, str, list[str], int, int, int]) -> tuple[int, int, int, float]:
    url, tenant, sub_ids, worker, batches, now_ms = args
    db = Database(url)
    at = ms_to_rfc3339(now_ms - 60_000)
    assert at is not None
    accepted = duplicates = rejected = 0
    started = time.perf_counter()
    for number in range(batches):
        result = ingest_usage_events(
            db, tenant, {"events": _batch(worker, number, sub_ids, at)}, now_ms
        )
        accepted += result.accepted
        duplicates += result.duplicates
        rejected += len(result.rejected)
    db.dispose()
    return accepted, duplicates, rejected, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    clock = ManualClock()
    with fresh_database() as url:
        tenant, sub_ids = setup_tenant(url, clock, subscriptions=1000)
        batches = args.events // BATCH // args.workers
        jobs = [(url, tenant, sub_ids, w, batches, clock.now_ms()) for w in range(args.workers)]
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(_work, jobs)
        elapsed = time.perf_counter() - started
    sent = batches * BATCH * args.workers
    accepted = sum(r[0] for r in results)
    duplicates = sum(r[1] for r in results)
    rejected = sum(r[2] for r in results)
    print(machine_description())
    print(
        f"events sent {sent}, accepted {accepted}, duplicates {duplicates}, rejected {rejected}; "
        f"{elapsed:.1f} s, {sent / elapsed:,.0f} events/s with {args.workers} processes"
    )
    assert rejected == 0 and accepted + duplicates == sent


if __name__ == "__main__":
    main()
