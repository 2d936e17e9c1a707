"""Overlapping billing runs in separate PROCESSES on PostgreSQL, and a worker killed with SIGKILL
mid-run: every period invoiced exactly once, every invoice paid at most once, the ledger balanced.

The default run uses 400 subscriptions (still 4 processes, so runs overlap batch by batch); the
full size (2,000 subscriptions, 300 of them charged) runs with the slow marker:
`.venv/bin/pytest -m slow tests/integration/billing/test_concurrent_runs.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.integration.billing.helpers import (
    bulk_subscriptions,
    create_metric,
    create_plan,
    iso,
    ledger_totals,
)

from billkeep.billing.runs import run_billing_cycle
from billkeep.billing.usage_ingest import ingest_usage_events
from billkeep.domain.clock import ManualClock
from billkeep.domain.periods import MS_PER_DAY, ms_from_civil, periods_ending_by
from billkeep.engine.ledger import trial_balance
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.storage.tables.billing import invoice_attempts, invoices, subscriptions, usage_events
from billkeep.storage.tables.core import charges

pytestmark = pytest.mark.postgres

PROC = Path(__file__).with_name("billing_proc.py")
JAN_1 = ms_from_civil(2026, 1, 1)
MAR_1 = ms_from_civil(2026, 3, 1)
UNIT_MINOR = 7
DECLINED_EVERY = 10
LEASES_PASSED_MS = 5 * 60_000  # beyond the command lease and the charge lease


@dataclass(frozen=True)
class Size:
    subscriptions: int
    usage_subscriptions: int  # these get usage, so their invoices are charged
    events: int  # 2 units each, spread over the usage subscriptions
    kill_after_invoices: int  # the kill -9 test kills the worker once this many exist


DEFAULT = Size(subscriptions=400, usage_subscriptions=60, events=200, kill_after_invoices=150)
FULL = Size(subscriptions=2000, usage_subscriptions=300, events=1000, kill_after_invoices=300)


@pytest.fixture(
    params=[pytest.param(DEFAULT, id="400"), pytest.param(FULL, id="2000", marks=pytest.mark.slow)]
)
def size(request: pytest.FixtureRequest) -> Size:
    # The project's default options do not deselect `slow`; the full size runs only when asked
    # for (`-m slow`), so the default suite stays short.
    markexpr = str(request.config.getoption("markexpr") or "")
    if request.param is FULL and ("slow" not in markexpr or "not slow" in markexpr):
        pytest.skip("full size: run with -m slow")
    return request.param  # type: ignore[no-any-return]


def _setup(bk: Billkeep, clock: ManualClock, size: Size) -> tuple[str, list[str], list[int]]:
    tenant, _ = bk.tenants.create_tenant("concurrency", clock.now_ms())
    create_metric(bk, tenant, "units")
    plan = create_plan(
        bk,
        tenant,
        "p",
        # Usage only: idle subscriptions get zero invoices (settled at once, nothing to charge),
        # the usage subscriptions get charged, every DECLINED_EVERY-th one declined.
        [{"type": "per_unit", "metric": "units", "unit_amount": UNIT_MINOR}],
    )
    starts = [JAN_1 + (n % 28) * MS_PER_DAY for n in range(size.subscriptions)]
    subs = bulk_subscriptions(bk, tenant, plan, starts, declined_every=DECLINED_EVERY)
    clock.set(MAR_1)
    events = [
        {
            "event_id": f"e-{n}",
            "subscription_id": subs[n % size.usage_subscriptions],
            "metric": "units",
            "timestamp": iso(starts[n % size.usage_subscriptions] + MS_PER_DAY),
            "properties": {"units": 2},
        }
        for n in range(size.events)
    ]
    assert ingest_usage_events(bk.db, tenant, {"events": events}, MAR_1).accepted == size.events
    return tenant, subs, starts


def _spawn(url: str, gateway_path: str, now_ms: int, as_of: list[int]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    return subprocess.Popen(
        [sys.executable, str(PROC), url, gateway_path, str(now_ms), ",".join(map(str, as_of))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _invoice_count(bk: Billkeep) -> int:
    with bk.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(invoices)).scalar_one())


def _assert_consistent(
    bk: Billkeep,
    tenant: str,
    subs: list[str],
    starts: list[int],
    gateway: FakeGateway,
    size: Size,
) -> None:
    with bk.db.read() as conn:
        rows = conn.execute(
            sa.select(
                invoices.c.id,
                invoices.c.subscription_id,
                invoices.c.period_start_ms,
                invoices.c.total_minor,
                invoices.c.amount_paid_minor,
                invoices.c.status,
                invoices.c.customer_id,
            ).where(invoices.c.tenant_id == tenant)
        ).all()
        succeeded = Counter(
            conn.execute(
                sa.select(charges.c.invoice_id).where(
                    charges.c.tenant_id == tenant, charges.c.status == "succeeded"
                )
            ).scalars()
        )
        pending_attempts = conn.execute(
            sa.select(sa.func.count()).where(invoice_attempts.c.status == "pending")
        ).scalar_one()
        unclaimed = conn.execute(
            sa.select(sa.func.count()).where(usage_events.c.invoice_id.is_(None))
        ).scalar_one()
        behind = conn.execute(
            sa.select(sa.func.count()).where(subscriptions.c.next_period_end_ms <= MAR_1)
        ).scalar_one()
        balance = trial_balance(conn, tenant)
    # I6: each (subscription, period) exactly once, none missing.
    expected = {
        (sub, p.start_ms)
        for sub, start in zip(subs, starts, strict=True)
        for p in periods_ending_by(start, "month", 1, MAR_1)
    }
    invoiced = [(r.subscription_id, r.period_start_ms) for r in rows]
    assert len(invoiced) == len(set(invoiced)) and set(invoiced) == expected
    assert behind == 0 and unclaimed == 0 and pending_attempts == 0
    # Each invoice paid at most once; paid exactly when one charge succeeded for it.
    assert max(succeeded.values()) == 1
    paid = {r.id for r in rows if r.status == "paid" and r.total_minor > 0}
    assert paid == set(succeeded)
    assert all(r.amount_paid_minor == (r.total_minor if r.status == "paid" else 0) for r in rows)
    assert all(r.status in ("paid", "open") for r in rows)
    assert all(n == 1 for n in gateway.succeeded_by_command().values())
    assert sum(gateway.succeeded_by_command().values()) == len(paid)
    assert sum(r.total_minor for r in rows) == size.events * 2 * UNIT_MINOR
    assert len([r for r in rows if r.total_minor > 0]) == size.usage_subscriptions
    # I3: balanced, and receivables are exactly what is unpaid.
    assert all(line.debits_minor == line.credits_minor for line in balance)
    balances = ledger_totals(bk, tenant)
    receivable = sum(v for k, v in balances.items() if k.startswith("customer_receivable:"))
    assert receivable == sum(r.total_minor - r.amount_paid_minor for r in rows) > 0
    assert balances["revenue:sales"] == -sum(r.total_minor for r in rows)


def test_four_processes_overlapping_runs_invoice_and_pay_each_period_once(
    pg_url: str,
    make_billkeep: Callable[..., Billkeep],
    clock: ManualClock,
    tmp_path: Path,
    size: Size,
) -> None:
    gateway_path = str(tmp_path / "gateway.db")
    gateway = FakeGateway(gateway_path, clock=clock)
    bk = make_billkeep(pg_url, gateway)
    tenant, subs, starts = _setup(bk, clock, size)
    feb_15 = ms_from_civil(2026, 2, 15)
    # Overlapping runs: two processes bill up to mid-February then March, two go straight to March.
    plans = [[feb_15, MAR_1], [MAR_1, MAR_1], [feb_15, MAR_1], [MAR_1]]
    started = time.monotonic()
    procs = [_spawn(pg_url, gateway_path, MAR_1, as_of) for as_of in plans]
    for proc in procs:
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    elapsed_s = time.monotonic() - started
    # Anything a process left in flight (none expected) is finished after the leases.
    clock.set(MAR_1 + LEASES_PASSED_MS)
    run_billing_cycle(bk, MAR_1)
    _assert_consistent(bk, tenant, subs, starts, gateway, size)
    assert elapsed_s < 600  # generous for a shared CI machine


def test_kill_9_mid_run_then_another_run_misses_and_doubles_nothing(
    pg_url: str,
    make_billkeep: Callable[..., Billkeep],
    clock: ManualClock,
    tmp_path: Path,
    size: Size,
) -> None:
    gateway_path = str(tmp_path / "gateway.db")
    gateway = FakeGateway(gateway_path, clock=clock)
    bk = make_billkeep(pg_url, gateway)
    tenant, subs, starts = _setup(bk, clock, size)
    victim = _spawn(pg_url, gateway_path, MAR_1, [MAR_1])
    deadline = time.monotonic() + 300
    while _invoice_count(bk) < size.kill_after_invoices and time.monotonic() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert victim.returncode == -signal.SIGKILL
    assert 0 < _invoice_count(bk) < len(subs) + 100
    # A fresh run after the leases expire completes the work, exactly once.
    survivor = _spawn(pg_url, gateway_path, MAR_1 + LEASES_PASSED_MS, [MAR_1])
    _out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-2000:]
    clock.set(MAR_1 + 2 * LEASES_PASSED_MS)
    run_billing_cycle(bk, MAR_1)  # nothing left; a repeat must change nothing
    _assert_consistent(bk, tenant, subs, starts, gateway, size)
