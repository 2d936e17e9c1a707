"""A real process dies at every phase boundary of a charge (os._exit, and kill -9 mid-call);
a retry with the same key afterwards gives exactly one gateway payment and one set of postings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.support.charge_process import CRASH_TEST_LEASE_MS

from billkeep.domain.clock import SystemClock
from billkeep.engine.crashpoints import CRASH_EXIT_CODE
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database
from billkeep.storage.tables.core import journal_entries

ROOT = Path(__file__).resolve().parents[3]
CRASH_POINTS = [
    "charge.create:started:before",
    "charge.create:started:after_commit",
    "charge.create:attempt_recorded:before",
    "charge.create:attempt_recorded:after_call",
    "charge.create:attempt_recorded:after_commit",
]


def _setup(url: str, gateway_path: str) -> tuple[Billkeep, str, str]:
    bk = Billkeep(
        Database(url), StaticGatewayDirectory(FakeGateway(gateway_path)), clock=SystemClock()
    )
    tenant, _ = bk.tenants.create_tenant("crash", bk.clock.now_ms())
    customer = str(bk.create_customer(tenant, {"payment_method": "pm_card_visa"}, "c").body()["id"])
    return bk, tenant, customer


def _spawn(
    url: str, gateway_path: str, tenant: str, customer: str, env: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.charge_process",
            url,
            gateway_path,
            tenant,
            customer,
            "crash-key",
            "2500",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_exactly_once(bk: Billkeep, tenant: str, customer: str, gateway_path: str) -> None:
    time.sleep(CRASH_TEST_LEASE_MS / 1000 + 0.3)  # the dead process's lease expires
    result = bk.create_charge(
        tenant, {"customer_id": customer, "amount": 2500, "currency": "usd"}, "crash-key"
    )
    assert result.status == 201, result.body_text
    assert list(FakeGateway(gateway_path).succeeded_by_command().values()) == [1]
    keys = bk.db.run_read(
        lambda c: sorted(
            c.execute(
                sa.select(journal_entries.c.entry_key).where(journal_entries.c.tenant_id == tenant)
            ).scalars()
        )
    )
    assert len(keys) == 2 and keys[0].startswith("charge:") and keys[1].startswith("payment:"), keys
    assert bk.queries.trial_balance(tenant)["currencies"] == [
        {"currency": "usd", "debits": 5000, "credits": 5000}
    ]
    history = bk.queries.command(tenant, result.command_id)["history"]
    assert history[-1]["state"] == "succeeded"


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_exit_at_each_phase_boundary_then_retry(db_url: str, tmp_path: Path, crash_at: str) -> None:
    gateway_path = str(tmp_path / "gateway.db")
    bk, tenant, customer = _setup(db_url, gateway_path)
    proc = _spawn(db_url, gateway_path, tenant, customer, {"BILLKEEP_CRASH_AT": crash_at})
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == CRASH_EXIT_CODE, err
    assert f"crash point {crash_at}" in err
    _assert_exactly_once(bk, tenant, customer, gateway_path)
    bk.close()


def test_kill_9_while_gateway_call_in_flight(db_url: str, tmp_path: Path) -> None:
    gateway_path = str(tmp_path / "gateway.db")
    bk, tenant, customer = _setup(db_url, gateway_path)
    proc = _spawn(db_url, gateway_path, tenant, customer, {"CHARGE_PROCESS_SLOW_GATEWAY_S": "30"})
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the payment exists at the gateway; the answer has not arrived
    assert line.strip() == "PAYMENT_MADE"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    _assert_exactly_once(bk, tenant, customer, gateway_path)
    bk.close()


def test_worker_resumes_a_crashed_command_without_a_client(db_url: str, tmp_path: Path) -> None:
    from billkeep.engine.worker import RecoveryWorker

    gateway_path = str(tmp_path / "gateway.db")
    bk, tenant, customer = _setup(db_url, gateway_path)
    proc = _spawn(
        db_url,
        gateway_path,
        tenant,
        customer,
        {"BILLKEEP_CRASH_AT": "charge.create:attempt_recorded:after_call"},
    )
    proc.communicate(timeout=60)
    time.sleep(CRASH_TEST_LEASE_MS / 1000 + 0.3)
    worker = RecoveryWorker(bk, actor="test-worker")
    worker.drain()
    assert worker.stats.finished == 1
    charges: Any = bk.queries.charges(tenant).data
    assert [c["status"] for c in charges] == ["succeeded"]
    assert list(FakeGateway(gateway_path).succeeded_by_command().values()) == [1]
    bk.close()
