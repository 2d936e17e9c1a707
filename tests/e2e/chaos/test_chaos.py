"""Real-process chaos on PostgreSQL: a gateway simulator process with faults on, 2 API servers and
3 workers, a driver sending a mixed workload over HTTP, and a loop that `kill -9`s a random
server or worker every few hundred ms. After the faults stop and recovery runs, the audit must
find no violation of I1-I11. BILLKEEP_CHAOS_SECONDS bounds the chaos (default 75 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from billkeep.chaos import ChaosConfig, run_chaos

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

CHAOS_SECONDS = float(os.environ.get("BILLKEEP_CHAOS_SECONDS", "75"))
MIN_SERVER_KILLS = 3
MIN_WORKER_KILLS = 3


@pytest.mark.timeout(int(CHAOS_SECONDS) + 300)
def test_kill9_chaos_with_gateway_faults_keeps_every_invariant(pg_url: str, tmp_path: Path) -> None:
    report = run_chaos(
        ChaosConfig(database_url=pg_url, duration_s=CHAOS_SECONDS, seed=7, work_dir=tmp_path)
    )
    details = "\n".join(str(v) for v in report.violations[:40])
    assert report.violations == [], f"{len(report.violations)} violations:\n{details}"
    assert report.errors == [], report.errors
    assert report.pending_after_recovery == 0
    # The chaos really happened: processes died mid-work and the gateway misbehaved.
    assert report.kills["server"] >= MIN_SERVER_KILLS, report.kills
    assert report.kills["worker"] >= MIN_WORKER_KILLS, report.kills
    assert report.outcomes["connection_error"] > 0, "clients saw servers die"
    assert report.faults_fired > 0, "the gateway's faults fired"
    # Unknown outcomes happened: a 202 to a client, or recorded in a command's history (a client
    # killed with its server mid-request never sees the 202 the worker later resolves).
    assert report.outcomes["unknown_202"] + report.unknown_outcomes > 0
    # And work got done through it all: final charges, declines, refunds, usage, billing.
    assert report.statuses[201] > 0 and report.statuses[402] > 0, report.statuses
    assert report.outcomes["usage_batches_acked"] > 0 and report.outcomes["isolation_probes"] > 0
    assert report.sim_state["payment_intents"]["by_status"].get("succeeded", 0) > 0
