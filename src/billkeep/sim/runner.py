"""One seed, one run: set up the world, drive the workload under faults, stop the faults, let
recovery finish, ask every client once more, and audit after every step and at the end.

Everything nondeterministic is derived from the seed: the workload, the interleaving, crashes,
network faults, latency, async settlement, and the ids the engine generates. The same seed on the
same database engine gives the same trace digest and the same data digest.
"""

from __future__ import annotations

import atexit
import logging
import random
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from billkeep.domain import ids
from billkeep.domain.clock import ManualClock
from billkeep.domain.commands import FINAL_STATES
from billkeep.domain.errors import NotFound
from billkeep.engine import command_store, crashpoints
from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.engine.worker import RecoveryWorker
from billkeep.gateways.simulator import SimConfig, SimStore, SimulatorCore
from billkeep.sim import extensions as _extensions  # noqa: F401  (registers them)
from billkeep.sim import workload
from billkeep.sim.auditor import Auditor, Violation
from billkeep.sim.digest import database_digest, gateway_digest, trace_digest
from billkeep.sim.extension import EXTENSION_FACTORIES, SimAction, SimExtension
from billkeep.sim.faults import FaultProfile, YieldPolicy
from billkeep.sim.gateway import GatewayFaults, GatewayRecords, SimGatewayDirectory
from billkeep.sim.history import ClientHistory, Intent, observe_call
from billkeep.sim.mutations import apply_mutation
from billkeep.sim.scheduler import Actor, ActorState, Scheduler, SimulatedCrash
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from billkeep.storage.tables.base import metadata
from billkeep.storage.tables.core import commands

__all__ = ["DEFAULT_STEPS", "SIM_ENGINE_CONFIG", "SimOptions", "SimResult", "run_seed"]

DEFAULT_STEPS = 150
TENANTS = 2
CUSTOMERS_PER_TENANT = 3
MAX_RECOVERY_ROUNDS = 80
MAX_RECOVERY_PASSES = 20  # command recovery + every extension's recovery, until all is quiet
RECOVERY_MIN_ADVANCE_MS = 1_000
CROSS_TENANT_KEY_REUSE_PROBABILITY = 0.1
FULL_REFUND_PROBABILITY = 0.4
SHORT_TRACE_LINES = 40
# Backoff capped at an hour so recovery converges well inside the 72 h idempotency retention.
SIM_ENGINE_CONFIG = EngineConfig(resolve_backoff_ms=(60_000, 300_000, 3_600_000))

_TEMPLATE: dict[str, Path] = {}
ALL_EXTENSIONS = frozenset(name for name, _factory in EXTENSION_FACTORIES)


@dataclass(frozen=True)
class SimOptions:
    seed: int
    steps: int = DEFAULT_STEPS
    database_url: str | None = None  # None: a fresh SQLite file per run
    mutation: str | None = None
    audit_every: int = 1
    # Which registered extensions run (default: all of them).
    extensions: frozenset[str] = field(default_factory=lambda: ALL_EXTENSIONS)


@dataclass
class SimResult:
    seed: int
    profile: str
    trace: list[str]
    violations: list[Violation]
    failed_step: int | None
    trace_digest: str = ""
    db_digest: str = ""
    gateway_digest: str = ""
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def short_trace(self, lines: int = SHORT_TRACE_LINES) -> list[str]:
        return self.trace[-lines:]


class HarnessFailure(Exception):
    """Engine code raised something no caller is prepared for (reported as a violation)."""


# --- database --------------------------------------------------------------------------------------
def _sqlite_template() -> Path:
    """Migrate once per process; every run starts from a copy of that file."""
    if "path" not in _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="billkeep-sim-template-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "template.db"
        db = Database(f"sqlite:///{path}")
        upgrade_to_head(db)
        db.dispose()
        _TEMPLATE["path"] = path
    return _TEMPLATE["path"]


@contextmanager
def _database(url: str | None) -> Iterator[Database]:
    if url is None:
        folder = Path(tempfile.mkdtemp(prefix="billkeep-sim-"))
        try:
            path = folder / "sim.db"
            shutil.copyfile(_sqlite_template(), path)
            db = Database(f"sqlite:///{path}")
            try:
                yield db
            finally:
                db.dispose()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    db = Database(url)
    try:
        upgrade_to_head(db)
        with db.write() as conn:  # a run starts from empty tables: digests depend on it
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
        yield db
    finally:
        db.dispose()


# --- the simulation --------------------------------------------------------------------------------
class Simulation:
    def __init__(self, options: SimOptions, db: Database) -> None:
        seed = options.seed
        self.seed = seed
        self.options = options
        self.db = db
        self.rng = random.Random(f"{seed}:workload")
        self.id_rng = random.Random(f"{seed}:ids")
        self.profile = FaultProfile.draw(random.Random(f"{seed}:profile"))
        self.clock = ManualClock()
        self.start_ms = self.clock.now_ms()
        self.trace: list[str] = [f"seed {seed} profile {self.profile.describe()}"]
        self.policy = YieldPolicy(self.profile, random.Random(f"{seed}:yield"))
        self.scheduler = Scheduler(self.policy, self._note)
        self.core = SimulatorCore(
            SimStore(":memory:"),
            self.clock,
            SimConfig(seed=seed, async_settle_ms=self.profile.async_settle_ms),
        )
        self.faults = GatewayFaults(
            random.Random(f"{seed}:gateway"),
            self.profile.gateway_fault_probability,
            self.profile.lookup_failure_probability,
            self.profile.max_latency_ms,
        )
        self.records = GatewayRecords()
        directory = SimGatewayDirectory(
            self.core, self.clock, self.faults, self.records, self.scheduler.yield_point
        )
        self.bk = Billkeep(db, directory, clock=self.clock, config=SIM_ENGINE_CONFIG)
        self.history = ClientHistory()
        self.auditor = Auditor(db, self.core, self.records, self.history)
        self.tenants: list[str] = []
        self.customers: dict[str, list[str]] = {}
        self.stale_readers: set[str] = set()
        self.used_jumps: set[str] = set()
        self.harness_errors: list[str] = []
        self.counters: dict[str, int] = {}
        self.extensions: list[SimExtension] = [
            factory(self) for name, factory in EXTENSION_FACTORIES if name in options.extensions
        ]

    # --- the SimWorld interface extensions use ---------------------------------------------------
    @property
    def faults_on(self) -> bool:
        return self.policy.enabled

    def rng_for(self, stream: str) -> random.Random:
        return random.Random(f"{self.seed}:{stream}")

    def note(self, line: str) -> None:
        self._note(line)

    def spawn_actor(self, name: str, body: Callable[[], object]) -> Actor:
        actor = self.scheduler.spawn(name, body)
        self._step(actor)
        return actor

    def run_to_end(self, actor: Actor) -> None:
        self._run_to_end(actor)

    def next_number(self, what: str) -> int:
        return self._next(what)

    # --- bookkeeping -------------------------------------------------------------------------------
    def _note(self, line: str) -> None:
        self.trace.append(f"  t+{self.clock.now_ms() - self.start_ms} {line}")

    def _next(self, what: str) -> int:
        self.counters[what] = self.counters.get(what, 0) + 1
        return self.counters[what]

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Install the seeded id source, the crash hook and the stale-read fault; undo after."""
        original_find = command_store.find_by_idempotency_key
        logger = logging.getLogger("billkeep")
        level = logger.level

        def find_racing(conn: Any, tenant_id: str, operation: str, key: str, now_ms: int) -> Any:
            actor = self.scheduler.current()
            if actor is not None and actor.name in self.stale_readers:
                # This duplicate's read ran before the first request's insert committed (as two
                # READ COMMITTED transactions can): it sees no key; the unique constraint decides.
                self.stale_readers.discard(actor.name)
                self._note(f"{actor.name} stale key read")
                return None
            return original_find(conn, tenant_id, operation, key, now_ms)

        with ExitStack() as stack:
            ids.set_random_source(self.id_rng.randbytes)
            stack.callback(ids.set_random_source, None)
            crashpoints.set_crash_hook(self.scheduler.yield_point)
            stack.callback(crashpoints.set_crash_hook, None)
            command_store.find_by_idempotency_key = find_racing
            stack.callback(setattr, command_store, "find_by_idempotency_key", original_find)
            logger.setLevel(logging.CRITICAL)  # expected failures are the point, not news
            stack.callback(logger.setLevel, level)
            stack.enter_context(apply_mutation(self.options.mutation, self.db))
            yield

    # --- setup -------------------------------------------------------------------------------------
    def setup(self) -> None:
        for number in range(TENANTS):
            tenant_id, _key = self.bk.tenants.create_tenant(
                f"sim tenant {number}", self.clock.now_ms()
            )
            self.tenants.append(tenant_id)
            self.customers[tenant_id] = []
            for index in range(CUSTOMERS_PER_TENANT):
                method = self.rng.choice(workload.DEFAULT_METHODS)
                result = self.bk.execute(
                    tenant_id,
                    "customer.create",
                    {"email": f"c{index}@t{number}.example", "payment_method": method},
                    idempotency_key=f"setup-customer-{index}",
                    actor="setup",
                )
                assert result.status == 201, result.body_text
                self.customers[tenant_id].append(str(result.body()["id"]))
        self.trace.append(f"setup tenants={len(self.tenants)} customers={CUSTOMERS_PER_TENANT}")
        for extension in self.extensions:
            extension.setup()
            self.trace.append(f"setup {extension.name}")

    # --- clients and workers -----------------------------------------------------------------------
    def submit(self, intent: Intent, *, stale_read: bool = False) -> Actor:
        name = f"client-{self._next('client')}"

        def body() -> None:
            observation = observe_call(self.bk, self.clock, intent, name)
            intent.observations.append(observation)
            self._note(
                f"{name} intent {intent.number} -> {observation.kind} {observation.status}"
                f"{' final' if observation.final else ''}{' replay' if observation.replayed else ''}"
            )

        if stale_read:
            self.stale_readers.add(name)
        self.trace.append(f"  submit {name} intent {intent.number} {intent.operation} {intent.key}")
        actor = self.scheduler.spawn(name, body)
        self._step(actor)
        return actor

    def spawn_worker(self) -> Actor:
        name = f"worker-{self._next('worker')}"
        worker = RecoveryWorker(self.bk, actor=name)

        def body() -> None:
            claimed = worker.run_once()
            self._note(f"{name} claimed {claimed} {worker.stats.outcomes}")

        actor = self.scheduler.spawn(name, body)
        self._step(actor)
        return actor

    def _step(self, actor: Actor) -> None:
        self.scheduler.step(actor)
        if actor.state is ActorState.PARKED:
            self._note(f"{actor.name} parked at {actor.point}")
        elif actor.state is ActorState.DONE and actor.error is not None:
            error = actor.error
            summary = "".join(traceback.format_exception_only(type(error), error)).strip()
            self.harness_errors.append(f"{actor.name}: {summary}")
            self._note(f"{actor.name} raised {summary}")

    # --- actions -----------------------------------------------------------------------------------
    def _refundable(self) -> list[tuple[str, str, int]]:
        found: dict[tuple[str, str], int] = {}
        for intent in self.history.intents:
            if intent.operation != "charge.create":
                continue
            for obs in intent.observations:
                body = obs.body()
                if isinstance(body, dict) and body.get("object") == "charge":
                    found[(intent.tenant_id, str(body["id"]))] = int(body["amount"])
        return [(t, c, a) for (t, c), a in found.items()]

    def _new_key(self, tenant_id: str, operation: str) -> str:
        mine = {i.key for i in self.history.intents if i.tenant_id == tenant_id}
        others = [
            i.key
            for i in self.history.intents
            if i.tenant_id != tenant_id and i.operation == operation and i.key not in mine
        ]
        if others and self.rng.random() < CROSS_TENANT_KEY_REUSE_PROBABILITY:
            return self.rng.choice(others)  # same key string, other tenant: must not collide
        return f"k{self._next('key'):05d}"

    def _maybe_duplicate(self, intent: Intent) -> None:
        if self.rng.random() < self.profile.duplicate_probability:
            stale = self.rng.random() < self.profile.stale_key_read_probability
            self.submit(intent, stale_read=stale)
        if self.rng.random() < self.profile.conflicting_duplicate_probability:
            request = dict(intent.request)
            if intent.operation == "charge.create":
                request["amount"] = int(request["amount"]) + 1
            else:
                request["reason"] = "conflicting"
            conflicting = self.history.add(
                Intent(
                    len(self.history.intents),
                    intent.tenant_id,
                    intent.operation,
                    intent.key,
                    request,
                    conflicts_with=intent.number,
                )
            )
            self.submit(conflicting)

    def act_new_charge(self) -> None:
        tenant_id = self.rng.choice(self.tenants)
        request: dict[str, Any] = {
            "customer_id": self.rng.choice(self.customers[tenant_id]),
            "amount": workload.amount_minor(self.rng),
            "currency": self.rng.choice(workload.CURRENCIES),
        }
        draw = self.rng.random()
        if draw < self.profile.async_share:
            request["payment_method"] = "pm_card_async"
        elif draw < self.profile.async_share + 0.1:
            request["payment_method"] = self.rng.choice(workload.DECLINING_METHODS)
        key = self._new_key(tenant_id, "charge.create")
        intent = self.history.add(
            Intent(len(self.history.intents), tenant_id, "charge.create", key, request)
        )
        self.submit(intent)
        self._maybe_duplicate(intent)

    def act_refund(self) -> None:
        tenant_id, charge_id, amount = self.rng.choice(self._refundable())
        racers = 2 if self.rng.random() < self.profile.refund_race_probability else 1
        for _ in range(racers):
            request: dict[str, Any] = {"charge_id": charge_id}
            if self.rng.random() >= FULL_REFUND_PROBABILITY:
                request["amount"] = self.rng.randint(1, amount)
            key = self._new_key(tenant_id, "refund.create")
            intent = self.history.add(
                Intent(len(self.history.intents), tenant_id, "refund.create", key, request)
            )
            self.submit(intent)
            self._maybe_duplicate(intent)

    def act_retry_open(self) -> None:
        open_intents = [i for i in self.history.intents if not i.settled]
        self.submit(self.rng.choice(open_intents))

    def act_resume_parked(self) -> None:
        actor = self.rng.choice(self.scheduler.parked())
        self.trace.append(f"  resume {actor.name} at {actor.point}")
        self._step(actor)

    def act_clock(self, jump: workload.ClockJump) -> None:
        delta_ms = self.rng.randint(jump.low_ms, jump.high_ms)
        if jump.once:
            self.used_jumps.add(jump.name)
        self.clock.advance(delta_ms)
        self.trace.append(f"  clock +{delta_ms}ms ({jump.name})")

    def act_settle_due(self) -> None:
        settled = self.core.settle_due()
        self.trace.append(f"  gateway settled {settled}")

    def act_tenant_probe(self) -> None:
        """Another tenant names this tenant's charge: it must not exist for them (I10)."""
        owner, charge_id, _amount = self.rng.choice(self._refundable())
        intruder = next(t for t in self.tenants if t != owner)
        try:
            self.bk.queries.charge(intruder, charge_id)
            self.history.isolation_breaches.append(f"{intruder} read {owner}'s charge {charge_id}")
        except NotFound:
            pass
        try:
            result = self.bk.execute(
                intruder,
                "refund.create",
                {"charge_id": charge_id},
                idempotency_key=f"probe-{self._next('probe')}",
                actor="probe",
            )
            self.history.isolation_breaches.append(
                f"{intruder} refunded {owner}'s charge {charge_id}: {result.status}"
            )
        except NotFound:
            pass
        self.trace.append(f"  probe {intruder} -> {owner}'s {charge_id}")

    def _available(self) -> dict[str, bool]:
        refundable = bool(self._refundable())
        available = {
            "resume_parked": bool(self.scheduler.parked()),
            "retry_open": any(not i.settled for i in self.history.intents),
            "refund": refundable,
            "tenant_probe": refundable,
        }
        for jump in workload.CLOCK_JUMPS_MS:
            available[f"clock_{jump.name}"] = not (jump.once and jump.name in self.used_jumps)
        return available

    def _extension_actions(self) -> dict[str, SimAction]:
        found: dict[str, SimAction] = {}
        for extension in self.extensions:
            for action in extension.actions():
                assert action.name not in workload.ACTION_WEIGHTS, action.name
                assert action.name not in found, f"action {action.name} offered twice"
                found[action.name] = action
        return found

    def _weights(self) -> dict[str, float]:
        """Weight per action that has a candidate now, in a fixed order (core first)."""
        available = self._available()
        weights = {
            name: weight
            for name, weight in workload.ACTION_WEIGHTS.items()
            if available.get(name, True)
        }
        for name, action in self._extension_actions().items():
            if action.available():
                weights[name] = action.weight
        return weights

    def act(self, name: str) -> None:
        extension_actions = self._extension_actions()
        if name in extension_actions:
            extension_actions[name].run()
            return
        jumps = {f"clock_{j.name}": j for j in workload.CLOCK_JUMPS_MS}
        if name in jumps:
            self.act_clock(jumps[name])
            return
        actions: dict[str, Callable[[], Any]] = {
            "resume_parked": self.act_resume_parked,
            "new_charge": self.act_new_charge,
            "retry_open": self.act_retry_open,
            "refund": self.act_refund,
            "worker_tick": self.spawn_worker,
            "gateway_settle_due": self.act_settle_due,
            "tenant_probe": self.act_tenant_probe,
        }
        actions[name]()

    # --- phases ------------------------------------------------------------------------------------
    def _audit(self, step: int) -> list[Violation]:
        found = self.auditor.check_safety()
        for extension in self.extensions:
            found += extension.check_safety()
        found += [Violation("harness", error) for error in self.harness_errors]
        if found:
            self.trace.append(f"step {step}: {len(found)} violation(s)")
        return found

    def run_faulty_phase(self) -> tuple[list[Violation], int | None]:
        for step in range(self.options.steps):
            name = workload.choose_action(self.rng, self._weights())
            self.trace.append(f"step {step} t+{self.clock.now_ms() - self.start_ms} {name}")
            self.act(name)
            if step % self.options.audit_every == 0 or step == self.options.steps - 1:
                found = self._audit(step)
                if found:
                    return found, step
        return [], None

    def _pending_due_ms(self) -> int | None:
        """When the next non-final command becomes claimable, or None if all are final."""
        non_final = [s.value for s in FINAL_STATES]
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(commands.c.lease_expires_at_ms, commands.c.next_attempt_at_ms).where(
                    commands.c.state.not_in(non_final)
                )
            ).all()
        if not rows:
            return None
        return min(max(lease or 0, nxt or 0) for lease, nxt in rows)

    def run_recovery(self) -> None:
        """Faults stop: parked actors finish, the worker runs until every command is final,
        then every client asks once more (a replay, or the first answer for a lost request)."""
        self.policy.enabled = False
        self.faults.enabled = False
        self.trace.append("faults stop")
        for actor in list(self.scheduler.actors):
            while not actor.finished:
                self._step(actor)
        for pass_number in range(MAX_RECOVERY_PASSES):
            self._recover_commands()
            busy = [extension.name for extension in self.extensions if extension.recover()]
            if not busy and self._pending_due_ms() is None:
                break
            self.trace.append(f"recovery pass {pass_number}: {', '.join(busy) or 'commands'}")
        self.trace.append("clients ask again")
        for intent in list(self.history.intents):
            self._run_to_end(self.submit(intent))

    def _recover_commands(self) -> None:
        """The worker runs (the clock jumping to the next due command) until all are final."""
        for round_number in range(MAX_RECOVERY_ROUNDS):
            due_ms = self._pending_due_ms()
            if due_ms is None:
                break
            now_ms = self.clock.now_ms()
            self.clock.advance(max(RECOVERY_MIN_ADVANCE_MS, due_ms + 1 - now_ms))
            self.core.settle_due()
            self.trace.append(f"recovery round {round_number}")
            self._run_to_end(self.spawn_worker())

    def _run_to_end(self, actor: Actor) -> None:
        while not actor.finished:
            self._step(actor)


def run_seed(options: SimOptions) -> SimResult:
    with _database(options.database_url) as db:
        sim = Simulation(options, db)
        violations: list[Violation] = []
        failed_step: int | None = None
        with sim.installed():
            try:
                sim.setup()
                violations, failed_step = sim.run_faulty_phase()
                if not violations:
                    sim.run_recovery()
                    violations = sim.auditor.check_final()
                    for extension in sim.extensions:
                        violations += extension.check_final()
                    violations += [Violation("harness", e) for e in sim.harness_errors]
                    if violations:
                        failed_step = options.steps
            except (Exception, SimulatedCrash) as exc:
                summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                violations = [Violation("harness", f"run aborted: {summary}")]
                failed_step = -1
            finally:
                # Never leave actor threads parked behind: finish or abandon them.
                sim.policy.enabled = False
                sim.faults.enabled = False
                for actor in list(sim.scheduler.actors):
                    guard = 0
                    while not actor.finished and guard < MAX_RECOVERY_ROUNDS:
                        try:
                            sim.scheduler.step(actor)
                        except RuntimeError:
                            break
                        guard += 1
        for v in violations:
            sim.trace.append(f"VIOLATION {v}")
        result = SimResult(
            seed=options.seed,
            profile=sim.profile.describe(),
            trace=sim.trace,
            violations=violations,
            failed_step=failed_step,
            trace_digest=trace_digest(sim.trace),
            db_digest=database_digest(db),
            gateway_digest=gateway_digest(sim.core),
            stats={
                "intents": len(sim.history.intents),
                "crashes": sim.policy.crashes,
                "gateway_faults": len(sim.faults.log),
                "audits": sim.auditor.audits,
                "payments": len(sim.records.payment_keys),
                "refunds": len(sim.records.refund_keys),
                **{
                    f"{extension.name}.{key}": value
                    for extension in sim.extensions
                    for key, value in extension.stats().items()
                },
            },
        )
        sim.core.store.close()
        return result
