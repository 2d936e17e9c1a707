"""Usage ingestion: per-item results, dedup by event_id within and across (concurrent) batches."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.billing.helpers import (
    create_customer,
    create_metric,
    create_plan,
    create_subscription,
    ingest,
    iso,
)

from billkeep.billing.usage_ingest import ingest_usage_events
from billkeep.domain.clock import ManualClock
from billkeep.domain.periods import MS_PER_DAY
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.storage.tables.billing import usage_events


def _setup(bk: Billkeep, tenant: str) -> tuple[str, str]:
    create_metric(bk, tenant, "units")
    plan = create_plan(bk, tenant, "p", [{"type": "per_unit", "metric": "units", "unit_amount": 1}])
    customer = create_customer(bk, tenant)
    return customer, create_subscription(bk, tenant, customer, plan)


def _ev(event_id: str, sub: str, at_ms: int, units: Any = 1, **extra: Any) -> dict[str, Any]:
    body = {
        "event_id": event_id,
        "subscription_id": sub,
        "metric": "units",
        "timestamp": iso(at_ms),
        "properties": {"units": units},
    }
    body.update(extra)
    return body


def _stored(bk: Billkeep, tenant: str) -> int:
    with bk.db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(usage_events.c.tenant_id == tenant)
            ).scalar_one()
        )


def test_per_item_results_and_rejection_codes(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    customer, sub = _setup(bk, tenant)
    now = clock.now_ms()
    result = ingest(
        bk,
        tenant,
        [
            _ev("ok-1", sub, now),
            _ev("ok-1", sub, now),  # exact repeat inside the batch: a duplicate
            _ev("ok-1", sub, now, units=2),  # same id, other content
            _ev("future", sub, now + 6 * 60_000),
            _ev("near-future", sub, now + 4 * 60_000),
            _ev("no-sub", "sub_missing", now),
            {**_ev("no-metric", sub, now), "metric": "nope"},
            _ev("bad-prop", sub, now, units="three"),
            {
                "event_id": "by-customer",
                "customer_id": customer,
                "metric": "units",
                "timestamp": iso(now),
                "properties": {"units": 4},
            },
        ],
    )
    assert (result["accepted"], result["duplicates"]) == (3, 1)
    assert [(r["index"], r["code"]) for r in result["rejected"]] == [
        (2, "event_id_reused"),
        (3, "timestamp_in_future"),
        (5, "unknown_subscription"),
        (6, "unknown_metric"),
        (7, "property_not_integer"),
    ]
    again = ingest(bk, tenant, [_ev("ok-1", sub, now), _ev("ok-1x", sub, now)])
    assert (again["accepted"], again["duplicates"]) == (1, 1)
    reused = ingest(bk, tenant, [_ev("ok-1", sub, now, units=9)])
    assert reused["rejected"][0]["code"] == "event_id_reused"
    assert _stored(bk, tenant) == 4


def test_other_tenant_cannot_see_or_reuse_ids(
    bk: Billkeep, tenant: str, clock: ManualClock
) -> None:
    _, sub = _setup(bk, tenant)
    other, _ = bk.tenants.create_tenant("other", clock.now_ms())
    ingest(bk, tenant, [_ev("shared-id", sub, clock.now_ms())])
    result = ingest(bk, other, [_ev("shared-id", sub, clock.now_ms())])
    assert result["rejected"][0]["code"] == "unknown_subscription"  # not visible to `other`


@pytest.mark.postgres
def test_concurrent_overlapping_batches_count_each_event_once(
    pg_url: str, make_billkeep: Callable[..., Billkeep], clock: ManualClock
) -> None:
    bk = make_billkeep(pg_url, FakeGateway(clock=clock))
    tenant, _ = bk.tenants.create_tenant("t", clock.now_ms())
    _, sub = _setup(bk, tenant)
    at_ms = clock.now_ms() - MS_PER_DAY
    # 8 threads x 5 batches of 400 over 1000 distinct ids: heavy overlap within and across.
    threads_n, batches_n, batch_size, distinct = 8, 5, 400, 1000
    barrier = threading.Barrier(threads_n)
    totals: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        barrier.wait()
        for batch in range(batches_n):
            ids = [(seed * 97 + batch * 131 + i * 7) % distinct for i in range(batch_size)]
            body = {"events": [_ev(f"e{n}", sub, at_ms + n) for n in ids]}
            result = ingest_usage_events(bk.db, tenant, body, clock.now_ms()).as_dict()
            with lock:
                totals.append(result)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(totals) == threads_n * batches_n
    accepted = sum(t["accepted"] for t in totals)
    duplicates = sum(t["duplicates"] for t in totals)
    assert all(not t["rejected"] for t in totals)
    stored = _stored(bk, tenant)
    assert accepted == stored  # each stored event was accepted by exactly one batch
    assert accepted + duplicates == threads_n * batches_n * batch_size
    assert stored <= distinct
