"""The real-process chaos run: a simulator process with faults, 2 API servers, 3 workers on one
PostgreSQL database, a driver sending real HTTP, and a loop that `kill -9`s a random server or
worker every few hundred ms and restarts it. Then faults stop, recovery runs, and the audit checks
the invariants against the simulator's records and the database.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from billkeep.chaos.audit import HttpGateway, audit_run
from billkeep.chaos.client import ApiClient, ClientLog
from billkeep.chaos.processes import ManagedProcess, Supervisor
from billkeep.chaos.workload import Driver, setup_fixtures
from billkeep.domain.clock import SystemClock, ms_to_rfc3339
from billkeep.domain.commands import FINAL_STATES
from billkeep.engine.tenants import TenantStore
from billkeep.gateways.simulator_process import SimulatorProcess
from billkeep.sim.auditor import Violation
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from billkeep.storage.tables.core import command_transitions, commands

__all__ = ["ChaosConfig", "ChaosReport", "fault_plan", "run_chaos"]

SECRET_KEY = "chaos-harness-server-key-0123456789abcdef"
RECOVERY_TIMEOUT_MS = 120_000
RECOVERY_POLL_MS = 250
RESTART_DELAY_MS = (0, 500)  # a killed process comes back after this long (uniform)
# Engine limits short enough for a run of minutes (production defaults are minutes to days).
ENGINE_ENV = {
    "BILLKEEP_LEASE": "2s",
    "BILLKEEP_RESOLVE_BACKOFF": "200ms,500ms,1s",
    "BILLKEEP_ERROR_RETRY": "200ms",
}


@dataclass(frozen=True)
class ChaosConfig:
    database_url: str
    duration_s: float = 60.0
    seed: int = 0
    servers: int = 2
    workers: int = 3
    t1_clients: int = 6
    kill_interval_ms: tuple[int, int] = (300, 900)  # between two kills (uniform)
    faults: bool = True
    work_dir: Path | None = None


@dataclass
class ChaosReport:
    config: ChaosConfig
    kills: Counter[str] = field(default_factory=Counter)  # "server" / "worker" -> kills
    restarts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    keys: int = 0
    pending_after_recovery: int = 0
    faults_fired: int = 0
    unknown_outcomes: int = 0  # commands that went through outcome_unknown (recorded history)
    sim_state: Any = None
    violations: list[Violation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.errors


def fault_plan(seed: int) -> dict[str, Any]:
    """Gateway faults on every write and on lookups (the simulator's /_sim/faults format)."""
    pay, refund = "/v1/payment_intents", "/v1/refunds"
    return {
        "seed": seed,
        "rules": [
            {"match": {"method": "POST", "path": pay}, "fault": "error_after_commit",
             "probability": 0.12},
            {"match": {"method": "POST", "path": pay}, "fault": "error_before_commit",
             "probability": 0.08},
            # held past the adapter's 10 s read timeout: an unknown outcome after the payment
            {"match": {"method": "POST", "path": pay}, "fault": "timeout_after_commit",
             "probability": 0.03, "hold_ms": 11_000},
            {"match": {"method": "POST", "path": pay}, "fault": "latency", "probability": 0.2,
             "latency_ms": 50},
            {"match": {"method": "POST", "path": refund}, "fault": "error_after_commit",
             "probability": 0.12},
            {"match": {"method": "POST", "path": refund}, "fault": "error_before_commit",
             "probability": 0.08},
            {"match": {"method": "GET", "path": f"{pay}*"}, "fault": "error_before_commit",
             "probability": 0.1},
        ],
    }  # fmt: skip


class ChaosLoop:
    """Kills a random live server or worker (never the last server answering) and restarts it."""

    def __init__(self, supervisor: Supervisor, config: ChaosConfig, report: ChaosReport) -> None:
        self.supervisor = supervisor
        self.config = config
        self.report = report
        self.rng = random.Random(f"{config.seed}:chaos")
        self.stop = threading.Event()
        self.restarters: list[threading.Thread] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        low, high = self.config.kill_interval_ms
        while not self.stop.wait(self.rng.uniform(low, high) / 1000):
            victim = self._pick()
            if victim is None:
                continue
            with victim.lock:
                killed = victim.kill9()
            if killed:
                with self.lock:
                    self.report.kills[victim.kind] += 1
                thread = threading.Thread(target=self._restart, args=(victim,), daemon=True)
                thread.start()
                self.restarters.append(thread)

    def _pick(self) -> ManagedProcess | None:
        alive = [p for p in self.supervisor.processes if p.alive()]
        serving = [p for p in alive if p.kind == "server" and p.ready]
        if len(serving) <= 1:  # keep one server answering: restarts take seconds under load
            alive = [p for p in alive if p.kind != "server"]
        return self.rng.choice(alive) if alive else None

    def _restart(self, process: ManagedProcess) -> None:
        time.sleep(self.rng.uniform(*RESTART_DELAY_MS) / 1000)
        with process.lock:
            if self.stop.is_set() or process.alive():
                return
            process.spawn()
        with self.lock:
            self.report.restarts += 1
        process.wait_ready()

    def join(self) -> None:
        for thread in self.restarters:
            thread.join()


def _environment(config: ChaosConfig, sim: SimulatorProcess) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLKEEP_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(ENGINE_ENV)
    env.update(
        {
            "BILLKEEP_DATABASE_URL": config.database_url,
            "BILLKEEP_SECRET_KEY": SECRET_KEY,
            "BILLKEEP_DEFAULT_GATEWAY": "stripe",
            "BILLKEEP_STRIPE_API_KEY": sim.api_key,
            "BILLKEEP_STRIPE_API_BASE": sim.url,
            "BILLKEEP_LOG_FORMAT": "console",
            "BILLKEEP_MIGRATE_ON_START": "0",
        }
    )
    return env


def _unknown_outcomes(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count(sa.distinct(command_transitions.c.command_id))).where(
                    command_transitions.c.recovery_point == "outcome_unknown"
                )
            ).scalar_one()
        )


def _non_final_commands(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    commands.c.state.not_in([state.value for state in FINAL_STATES])
                )
            ).scalar_one()
        )


def run_chaos(config: ChaosConfig, progress: Any = None) -> ChaosReport:
    """One whole run; every process it starts is stopped before it returns (or raises)."""
    report = ChaosReport(config)
    with tempfile.TemporaryDirectory(prefix="billkeep-chaos-") as tmp:
        work = config.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        sim = SimulatorProcess(work / "gateway-sim.sqlite", seed=config.seed)
        supervisor: Supervisor | None = None
        db = Database(config.database_url)
        try:
            upgrade_to_head(db)
            sim.start()
            supervisor = Supervisor(_environment(config, sim), work, config.servers, config.workers)
            _run(config, report, db, sim, supervisor, progress)
        finally:
            if supervisor is not None:
                supervisor.stop_all()
            sim.stop()
            db.dispose()
    return report


def _say(progress: Any, text: str) -> None:
    if progress is not None:
        progress(text)


def _run(
    config: ChaosConfig,
    report: ChaosReport,
    db: Database,
    sim: SimulatorProcess,
    supervisor: Supervisor,
    progress: Any,
) -> None:
    began = time.monotonic()
    now_ms = SystemClock().now_ms()
    store = TenantStore(db)
    t1_id, t1_key = store.create_tenant("chaos tenant 1", now_ms)
    t2_id, t2_key = store.create_tenant("chaos tenant 2", now_ms)
    tenants = {"t1": t1_id, "t2": t2_id}
    log = ClientLog()
    supervisor.start(supervisor.servers)  # workers wait: the first period's usage goes in first
    urls = supervisor.server_urls()
    rng = random.Random(f"{config.seed}:clients")

    def client(label: str, tenant_id: str, key: str) -> ApiClient:
        return ApiClient(label, tenant_id, key, urls, log, random.Random(rng.random()))

    t1_setup, t2 = client("t1", t1_id, t1_key), client("t2", t2_id, t2_key)
    fixtures = setup_fixtures(t1_setup, t2, now_ms)
    supervisor.start(supervisor.workers)
    report.timings_s["setup"] = time.monotonic() - began
    _say(
        progress, f"setup done in {report.timings_s['setup']:.1f}s; chaos for {config.duration_s}s"
    )

    if config.faults:
        sim.set_faults(fault_plan(config.seed))
    t1_clients = [client("t1", t1_id, t1_key) for _ in range(config.t1_clients)]
    driver = Driver(t1_clients, t2, fixtures, config.seed)
    chaos = ChaosLoop(supervisor, config, report)
    chaos_thread = threading.Thread(target=chaos.run, daemon=True)
    threads = driver.run()
    chaos_thread.start()
    chaos_began = time.monotonic()
    try:
        time.sleep(config.duration_s)
    finally:
        chaos.stop.set()
        driver.stop.set()
        chaos_thread.join()
        chaos.join()
        for thread in threads:
            thread.join(60)
    report.timings_s["chaos"] = time.monotonic() - chaos_began

    # --- recovery: faults off, everything restarted, workers drain, clients retry to final ------
    recovery_began = time.monotonic()
    faults = sim.control("GET", "/_sim/faults") if config.faults else {"rules": []}
    report.faults_fired = sum(int(r.get("fired", 0)) for r in faults.get("rules", []))
    sim.clear_faults()
    supervisor.restart_dead()
    _say(progress, "faults off, every process up; recovering")
    deadline = time.monotonic() + RECOVERY_TIMEOUT_MS / 1000
    recovery_client = client("t1", t1_id, t1_key)
    clients = {"t1": recovery_client, "t2": t2}
    final_run_key = f"final-run-{config.seed}"
    final_run = {"as_of": ms_to_rfc3339(SystemClock().now_ms() - 1000)}
    recovery_client.command("/v1/billing_runs", final_run, final_run_key, deadline)
    while time.monotonic() < deadline:
        with log.lock:
            pending = sorted(log.pending)
        for label, path, key in pending:
            clients[label].command(
                path, log.requests[(label, path, key)], key, time.monotonic() + 1
            )
        if not log.pending and _non_final_commands(db) == 0:
            break
        time.sleep(RECOVERY_POLL_MS / 1000)
    # Every client asks once more: the replays must equal the first final answers (I5).
    with log.lock:
        done = sorted(log.finals)
    for label, path, key in done:
        clients[label].command(path, log.requests[(label, path, key)], key, deadline)
    report.timings_s["recovery"] = time.monotonic() - recovery_began

    report.sim_state = sim.state()
    report.violations = audit_run(
        db, HttpGateway(sim.url, sim.api_key), log, tenants, SystemClock().now_ms()
    )
    report.unknown_outcomes = _unknown_outcomes(db)
    report.statuses = log.statuses
    report.outcomes = log.outcomes
    report.keys = len(log.requests)
    report.pending_after_recovery = len(log.pending)
    report.errors = list(log.errors)
    for each in [t1_setup, t2, recovery_client, *t1_clients]:
        each.close()
    report.timings_s["total"] = time.monotonic() - began
