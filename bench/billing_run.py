"""One billing run over many subscriptions with several worker processes, on PostgreSQL.

Setup (not timed): N monthly subscriptions that started 40 days ago, a usage-priced plan
(per_unit), and one usage event for a share of them (those invoices are charged through the engine
with the shared file-backed FakeGateway; the others are zero invoices, settled at once). Then W
worker processes run `run_billing_cycle` as of now at the same time (they split the work with
FOR UPDATE SKIP LOCKED). Reported: wall time, invoices per second, charges per second.

Run: `.venv/bin/python -m bench.billing_run [--subscriptions 100000] [--usage-share 0.1]
[--workers 2]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.billing_common import fresh_database, machine_description, setup_tenant
from billkeep.billing.runs import run_billing_cycle
from billkeep.billing.usage_ingest import ingest_usage_events
from billkeep.domain.clock import ManualClock, ms_to_rfc3339
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database

DAY_MS = 86_400_000


def _worker(args: tuple[str, str, int]) -> dict[str, Any]:
    url, gateway_path, now_ms = args
    clock = ManualClock(now_ms)
    bk = Billkeep(
        Database(url), StaticGatewayDirectory(FakeGateway(gateway_path, clock=clock)), clock=clock
    )
    started = time.perf_counter()
    result = run_billing_cycle(bk, now_ms).as_dict()
    result["seconds"] = time.perf_counter() - started
    bk.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--usage-share", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    clock = ManualClock()
    now_ms = clock.now_ms()
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        tenant, subs = setup_tenant(url, clock, subscriptions=args.subscriptions)
        charged = subs[: int(len(subs) * args.usage_share)]
        at = ms_to_rfc3339(now_ms - 39 * DAY_MS)
        db = Database(url)
        for chunk in range(0, len(charged), 1000):
            events = [
                {
                    "event_id": f"e-{sub}",
                    "subscription_id": sub,
                    "metric": "units",
                    "timestamp": at,
                    "properties": {"units": 10},
                }
                for sub in charged[chunk : chunk + 1000]
            ]
            ingest_usage_events(db, tenant, {"events": events}, now_ms)
        db.dispose()
        gateway_path = str(Path(tmp) / "gateway.db")
        FakeGateway(gateway_path)  # create the schema once, before the workers race to
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(_worker, [(url, gateway_path, now_ms)] * args.workers)
        elapsed = time.perf_counter() - started
    invoices = sum(r["invoices_created"] for r in results)
    charges = sum(r["charges_attempted"] for r in results)
    print(machine_description())
    print(
        f"{args.subscriptions} subscriptions, {args.workers} workers: {invoices} invoices created, "
        f"{charges} charges attempted in {elapsed:.1f} s "
        f"({invoices / elapsed:,.0f} invoices/s overall)"
    )
    for r in results:
        print("  worker:", r)
    assert invoices == args.subscriptions, "every subscription invoiced exactly once"


if __name__ == "__main__":
    main()
