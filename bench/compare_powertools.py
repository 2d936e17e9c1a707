"""billkeep vs AWS Lambda Powertools' idempotency utility: a crash between effect and record.

The same charge (a payment at billkeep's file-backed FakeGateway, which counts payments by the
caller's reference) is guarded two ways:

- Powertools: `idempotent_function` with `RedisCachePersistenceLayer` on a real Redis. The guard
  writes an INPROGRESS record, runs the function (which calls the gateway), then writes COMPLETED
  with the response. The record lives apart from the effect.
- billkeep: `charge.create` through `Billkeep` on SQLite and on PostgreSQL. The intent (command,
  charge, attempt #1) is recorded before the gateway call; the call carries an idempotency key
  derived from the command; an unknown outcome is resolved by asking the gateway.

Crash: every first attempt runs in a forked child that dies with `os._exit(137)` right after the
gateway call returned, before anything is recorded: for Powertools inside the guarded function
after the payment call, for billkeep at `charge.create:attempt_recorded:after_call`
(BILLKEEP_CRASH_AT). Then the client retries each intent with the same idempotency key, in rounds
`RETRY_INTERVAL_S` apart, until it gets an answer or `RETRY_ROUNDS` rounds passed. Afterwards the
gateway's payments are counted per intent, and the guard's own records are read back.

Overhead: without crashes, per-call latency of the bare gateway call, of Powertools+Redis and of
billkeep (SQLite, PostgreSQL), first call (new key) and replay (same key again), in the same run.

Run: `.venv/bin/python -m bench.compare_powertools` (about a minute; `--help`). It prints the
tables and, with `--write-docs`, replaces the generated block in docs/comparison.md.
Needs Redis on 127.0.0.1:6379 and PostgreSQL (`--skip-postgres` otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol, cast

import redis
import sqlalchemy as sa

from billkeep.domain.clock import SystemClock
from billkeep.domain.errors import IdempotencyKeyInUse
from billkeep.engine.crashpoints import CRASH_ENV, CRASH_EXIT_CODE
from billkeep.engine.executor import CommandIncomplete
from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.engine.worker import RecoveryWorker
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import PaymentRequest, StaticGatewayDirectory
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from billkeep.storage.tables.core import charges

# Powertools' persistence layer is deprecated in name only (v4 renames it CachePersistenceLayer,
# today an alias); and without a Lambda context `save_inprogress` warns on every call.
warnings.filterwarnings("ignore", module=r"aws_lambda_powertools\..*")
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message="Couldn't determine the remaining time left")

from aws_lambda_powertools.utilities.idempotency import (  # noqa: E402
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (  # noqa: E402
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.redis import (  # noqa: E402
    RedisCachePersistenceLayer,
)

__all__ = [
    "BILLKEEP_CRASH_POINT",
    "BillkeepGuard",
    "Blocked",
    "CrashResult",
    "Guard",
    "GuardError",
    "PowertoolsGuard",
    "main",
    "prepare_billkeep",
    "run_crash_scenario",
    "run_crashing",
]

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "comparison.md"
RESULTS_START = "<!-- compare_powertools:results:start -->"
RESULTS_END = "<!-- compare_powertools:results:end -->"

BILLKEEP_CRASH_POINT = "charge.create:attempt_recorded:after_call"
AMOUNT_MINOR = 1000
CURRENCY = "usd"
PAYMENT_METHOD = "pm_card_visa"

INTENTS = 50
RETRY_ROUNDS = 8
RETRY_INTERVAL_S = 0.5  # rounds span 3.5 s: past every short expiry below, inside every default
SHORT_EXPIRY_S = 2  # Powertools expires_after_seconds in the "short expiry" scenarios
LAMBDA_REMAINING_MS = 1_000  # what a registered Lambda context reports: the in-progress expiry
BILLKEEP_SHORT_LEASE_MS = 1_000  # the smallest lease billkeep accepts
OVERHEAD_CALLS = 100
LATENCY_BATCH = 10  # calls per subject before moving to the next one
BARE_SUBJECT = "gateway call alone"
WARMUP_CALLS = 20
CHILD_TIMEOUT_S = 30
CRASH_PARALLELISM = 8  # crash children alive at once


class Blocked(Exception):
    """The guard refused a retry because an earlier attempt is (or looks) still in progress."""


class GuardError(Exception):
    """The guard failed the call with a (retryable) error of its own."""


# Charge once per intent; returns the gateway's payment reference. Raises Blocked.
Charger = Callable[[str], str]


class Guard(Protocol):
    """One way of guarding the charge, for one scenario (its own gateway file and records)."""

    name: str

    def charger(self, *, crash_after_effect: bool) -> Charger: ...

    def payments(self, intents: list[str]) -> dict[str, int]:
        """Succeeded payments at the gateway per intent."""
        ...

    def recorded(self, intents: list[str]) -> int:
        """How many intents the guard itself has recorded as done (with the payment)."""
        ...

    def resolve_without_client(self) -> None:
        """Whatever the guard offers to finish crashed intents without a client retry."""
        ...


# --- crashing in a child process ----------------------------------------------------------------


def _fork(action: Callable[[], object]) -> int:
    """Start `action` in a forked child; returns its pid. The child never returns.

    Fork, not spawn: the child inherits the imported modules, so a crash costs milliseconds, and
    it builds every connection it uses itself (it never touches the parent's). `os._exit` skips
    all cleanup: no commit, no Redis write, nothing flushed, as with `kill -9`.
    """
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            action()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def run_crashing_many(
    actions: list[Callable[[], object]], parallel: int = CRASH_PARALLELISM
) -> list[tuple[int, float]]:
    """Run each action in its own child, `parallel` at a time; returns per action its exit code
    (CRASH_EXIT_CODE when it crashed) and the monotonic time its death was seen."""
    results: list[tuple[int, float] | None] = [None] * len(actions)
    running: dict[int, int] = {}  # pid -> action index
    next_index = 0
    deadline = time.monotonic() + CHILD_TIMEOUT_S + len(actions)
    try:
        while next_index < len(actions) or running:
            while next_index < len(actions) and len(running) < parallel:
                running[_fork(actions[next_index])] = next_index
                next_index += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"crash children {sorted(running)} did not finish in time")
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.002)
                continue
            index = running.pop(pid)
            results[index] = (os.waitstatus_to_exitcode(status), time.monotonic())
    finally:
        for pid in running:  # only on error: never leave a child behind
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return [r for r in results if r is not None]


def run_crashing(action: Callable[[], object]) -> int:
    """Run `action` in a forked child; returns its exit code (CRASH_EXIT_CODE when it crashed)."""
    return run_crashing_many([action], parallel=1)[0][0]


# --- Powertools ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FixedRemainingTime:
    """A stand-in Lambda context: Powertools only asks it for the remaining time (in-progress
    expiry = now + remaining); `register_lambda_context` is how code outside a handler passes it."""

    remaining_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class PowertoolsGuard:
    """`idempotent_function` over Redis around a function that calls the gateway.

    `derive_gateway_key`: False sends a fresh gateway idempotency key per execution (what the
    Powertools docs' payment example does: it passes none, and Stripe's client then generates one
    per request); True derives it from the caller's idempotency key, the best practice that makes
    the gateway itself deduplicate a re-execution (while it remembers the key).
    """

    name: str
    redis_url: str
    gateway_path: str
    key_prefix: str
    expires_after_seconds: int = 3600  # Powertools' default
    in_progress_expiry_ms: int | None = None  # None: no Lambda context registered
    derive_gateway_key: bool = False

    def _config(self) -> IdempotencyConfig:
        config = IdempotencyConfig(
            event_key_jmespath="idempotency_key",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self.expires_after_seconds,
        )
        if self.in_progress_expiry_ms is not None:
            config.register_lambda_context(
                cast(Any, _FixedRemainingTime(self.in_progress_expiry_ms))
            )
        return config

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def charger(self, *, crash_after_effect: bool) -> Charger:
        gateway = FakeGateway(self.gateway_path)
        # redis-py types its commands as sync-or-async unions; Powertools' protocol wants sync.
        store = RedisCachePersistenceLayer(client=cast(Any, self.client()))
        derive = self.derive_gateway_key

        def charge(*, charge: dict[str, Any]) -> dict[str, Any]:
            intent = str(charge["idempotency_key"])
            key = f"pt-{intent}" if derive else f"pt-{uuid.uuid4().hex}"
            result = gateway.create_payment(
                PaymentRequest(key, intent, charge["amount"], charge["currency"], PAYMENT_METHOD)
            )
            if crash_after_effect:
                os._exit(CRASH_EXIT_CODE)  # paid; Powertools has not written COMPLETED yet
            return {"payment": result.reference, "outcome": result.outcome.value}

        guarded = idempotent_function(
            charge,
            data_keyword_argument="charge",
            persistence_store=store,
            config=self._config(),
            key_prefix=self.key_prefix,
        )

        def call(intent: str) -> str:
            request = {"idempotency_key": intent, "amount": AMOUNT_MINOR, "currency": CURRENCY}
            try:
                response = guarded(charge=request)
            except IdempotencyAlreadyInProgressError as exc:
                raise Blocked(str(exc)) from exc
            except IdempotencyPersistenceLayerError as exc:
                # e.g. SET NX failed, then the record expired before the GET: a retryable error.
                raise GuardError(f"{exc}: {exc.__cause__!r}") from exc
            return str(response["payment"])

        return call

    def payments(self, intents: list[str]) -> dict[str, int]:
        counts = FakeGateway(self.gateway_path).succeeded_by_command()
        return {intent: counts.get(intent, 0) for intent in intents}

    def _records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """This guard's idempotency records in Redis: (key, decoded record)."""
        client = self.client()
        for key in client.scan_iter(match=f"{self.key_prefix}#*"):
            if str(key).endswith(":lock"):  # the orphan-takeover lock, not a record
                continue
            raw = client.get(key)
            if isinstance(raw, str):
                yield str(key), json.loads(raw)

    def recorded(self, intents: list[str]) -> int:
        """COMPLETED records in Redis (the only place Powertools writes the payment down)."""
        return sum(1 for _k, record in self._records() if record.get("status") == "COMPLETED")

    def inprogress_ttls_s(self) -> list[int]:
        """Seconds of life left in Redis for each INPROGRESS record (retries are refused until
        then when no in-progress expiry was set)."""
        client = self.client()
        return [
            int(cast(int, client.ttl(key)))
            for key, record in self._records()
            if record.get("status") == "INPROGRESS"
        ]

    def resolve_without_client(self) -> None:
        """Nothing: Powertools has no process that finishes an INPROGRESS record."""

    def cleanup(self) -> None:
        client = self.client()
        keys = list(client.scan_iter(match=f"{self.key_prefix}*"))
        if keys:
            client.delete(*keys)


# --- billkeep -----------------------------------------------------------------------------------


def prepare_billkeep(url: str, gateway_path: str) -> tuple[str, str]:
    """Migrate; create a tenant and a customer with a default card. Returns (tenant, customer)."""
    db = Database(url)
    upgrade_to_head(db)
    db.dispose()
    bk = Billkeep(Database(url), StaticGatewayDirectory(FakeGateway(gateway_path)))
    try:
        tenant_id, _api_key = bk.tenants.create_tenant("compare", bk.clock.now_ms())
        customer = bk.create_customer(
            tenant_id, {"email": "c@example.com", "payment_method": PAYMENT_METHOD}, "cus"
        )
        assert customer.status == 201, customer.body_text
        return tenant_id, str(customer.body()["id"])
    finally:
        bk.close()


@dataclass
class BillkeepGuard:
    name: str
    url: str
    gateway_path: str
    tenant_id: str
    customer_id: str
    lease_ms: int = EngineConfig.lease_ms
    _opened: list[Billkeep] = field(default_factory=list)

    def open(self) -> Billkeep:
        bk = Billkeep(
            Database(self.url),
            StaticGatewayDirectory(FakeGateway(self.gateway_path)),
            clock=SystemClock(),
            config=EngineConfig(lease_ms=self.lease_ms),
        )
        self._opened.append(bk)
        return bk

    def charger(self, *, crash_after_effect: bool) -> Charger:
        if crash_after_effect:
            os.environ[CRASH_ENV] = BILLKEEP_CRASH_POINT  # only ever set in a crash child
        bk = self.open()

        def call(intent: str) -> str:
            request = {
                "customer_id": self.customer_id,
                "amount": AMOUNT_MINOR,
                "currency": CURRENCY,
                "metadata": {"intent": intent},
            }
            try:
                result = bk.create_charge(self.tenant_id, request, intent)
            except IdempotencyKeyInUse as exc:
                raise Blocked(str(exc)) from exc
            except CommandIncomplete as exc:  # a 500 that leaves the command to the worker
                raise GuardError(str(exc)) from exc
            assert result.status == 201 and result.final, result.body_text
            return str(result.body()["gateway_reference"])

        return call

    def _charges_by_intent(self) -> dict[str, tuple[str, str]]:
        """intent -> (command id, charge status), from billkeep's own records."""
        db = Database(self.url)
        try:
            rows = db.run_read(
                lambda conn: conn.execute(
                    sa.select(charges.c.command_id, charges.c.status, charges.c.metadata).where(
                        charges.c.tenant_id == self.tenant_id
                    )
                ).all()
            )
        finally:
            db.dispose()
        return {json.loads(r.metadata).get("intent", ""): (r.command_id, r.status) for r in rows}

    def payments(self, intents: list[str]) -> dict[str, int]:
        counts = FakeGateway(self.gateway_path).succeeded_by_command()
        by_intent = self._charges_by_intent()
        commands = {i: by_intent[i][0] for i in intents if i in by_intent}
        known = set(commands.values())
        assert all(c in known for c in counts), "a payment no intent of this run asked for"
        return {i: counts.get(commands.get(i, ""), 0) for i in intents}

    def recorded(self, intents: list[str]) -> int:
        by_intent = self._charges_by_intent()
        return sum(1 for i in intents if by_intent.get(i, ("", ""))[1] == "succeeded")

    def resolve_without_client(self) -> None:
        """The recovery worker: resumes every command whose lease expired, no client needed."""
        time.sleep(self.lease_ms / 1000 + 0.1)
        RecoveryWorker(self.open()).drain()

    def close(self) -> None:
        for bk in self._opened:
            bk.close()
        self._opened.clear()


# --- the crash scenario -------------------------------------------------------------------------


@dataclass
class CrashResult:
    scenario: str
    intents: int
    crashed: int  # children that died at the crash point
    payments: dict[str, int]  # succeeded payments per intent, at the gateway
    recorded: int  # intents the guard recorded as done, at the end
    retries: int
    blocked: int  # retries refused as "in progress"
    errors: int  # retries that failed otherwise (retryable errors of the guard)
    answered: int  # intents whose client got an answer
    seconds_to_answer: list[float]  # crash -> first answer, per answered intent
    client_retries: bool = True
    inprogress_ttls_s: list[int] = field(
        default_factory=list
    )  # Powertools: records left INPROGRESS

    @property
    def duplicates(self) -> int:
        return sum(max(0, n - 1) for n in self.payments.values())

    @property
    def intents_paid_twice(self) -> int:
        return sum(1 for n in self.payments.values() if n > 1)

    @property
    def unpaid(self) -> int:
        return sum(1 for n in self.payments.values() if n == 0)


def run_crash_scenario(
    guard: Guard,
    intents: int = INTENTS,
    rounds: int = RETRY_ROUNDS,
    interval_s: float = RETRY_INTERVAL_S,
    *,
    client_retries: bool = True,
) -> CrashResult:
    """Crash every intent's first attempt after the effect; then retry (or let the guard's own
    recovery run); count payments per intent."""
    ids = [f"{guard.name}-{uuid.uuid4().hex[:8]}-{i}" for i in range(intents)]

    def first_attempt(intent: str) -> Callable[[], object]:
        return lambda: guard.charger(crash_after_effect=True)(intent)

    deaths = run_crashing_many([first_attempt(intent) for intent in ids])
    crashed_at = {intent: seen for intent, (_code, seen) in zip(ids, deaths, strict=True)}
    crashed = sum(1 for code, _seen in deaths if code == CRASH_EXIT_CODE)
    retries = blocked = errors = 0
    answered_after: dict[str, float] = {}
    if client_retries:
        charge = guard.charger(crash_after_effect=False)
        start = time.monotonic()
        for round_number in range(rounds):
            if len(answered_after) == len(ids):
                break
            time.sleep(max(0.0, start + round_number * interval_s - time.monotonic()))
            for intent in ids:
                if intent in answered_after:
                    continue
                retries += 1
                try:
                    charge(intent)
                except Blocked:
                    blocked += 1
                    continue
                except GuardError:
                    errors += 1
                    continue
                answered_after[intent] = time.monotonic() - crashed_at[intent]
    else:
        guard.resolve_without_client()
    return CrashResult(
        scenario=guard.name,
        intents=intents,
        crashed=crashed,
        payments=guard.payments(ids),
        recorded=guard.recorded(ids),
        retries=retries,
        blocked=blocked,
        errors=errors,
        answered=len(answered_after),
        seconds_to_answer=sorted(answered_after.values()),
        client_retries=client_retries,
    )


# --- per-call overhead --------------------------------------------------------------------------


@dataclass
class Latency:
    subject: str
    phase: str  # "first" (new key) | "replay" (same key again)
    samples_ms: list[float] = field(default_factory=list)
    cpu_ms: float = 0.0  # this process's CPU time over all samples (client side only)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95_ms(self) -> float:
        return statistics.quantiles(self.samples_ms, n=20)[18]

    @property
    def cpu_per_call_ms(self) -> float:
        return self.cpu_ms / len(self.samples_ms)


def _time_calls(call: Callable[[str], object], keys: list[str], into: Latency) -> None:
    cpu0 = time.process_time()
    for key in keys:
        t0 = time.perf_counter()
        call(key)
        into.samples_ms.append((time.perf_counter() - t0) * 1000)
    into.cpu_ms += (time.process_time() - cpu0) * 1000


def bare_charger(gateway_path: str) -> Charger:
    """The effect alone, unguarded: the baseline every guard adds to."""
    gateway = FakeGateway(gateway_path)

    def pay(key: str) -> str:
        result = gateway.create_payment(
            PaymentRequest(key, key, AMOUNT_MINOR, CURRENCY, PAYMENT_METHOD)
        )
        return str(result.reference)

    return pay


def measure_interleaved(subjects: list[tuple[str, Charger, bool]], calls: int) -> list[Latency]:
    """Per-call latency of each subject, first calls then replays, interleaved in batches.

    The batches alternate between subjects so that whatever else runs on the machine weighs on
    every subject alike. `subjects`: (name, charger, has a replay phase).
    """
    results: dict[tuple[str, str], Latency] = {}
    keys = {name: [f"lat-{uuid.uuid4().hex}" for _ in range(calls)] for name, _c, _r in subjects}
    for name, charge, _replays in subjects:  # warm-up: connections, statement caches
        warm = [f"warm-{uuid.uuid4().hex}" for _ in range(WARMUP_CALLS)]
        _time_calls(charge, warm, Latency(name, "warm-up"))
        _time_calls(charge, warm, Latency(name, "warm-up"))
    for phase in ("first", "replay"):
        for start in range(0, calls, LATENCY_BATCH):
            for name, charge, replays in subjects:
                if phase == "replay" and not replays:
                    continue
                into = results.setdefault((name, phase), Latency(name, phase))
                _time_calls(charge, keys[name][start : start + LATENCY_BATCH], into)
    return list(results.values())


# --- databases, machine -------------------------------------------------------------------------


@contextmanager
def scratch_pg_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of `admin_url`, dropped on exit."""
    name = f"compare_pt_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _load_average() -> str:
    """Other work on the machine (load above the CPU count means queueing for a core)."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def machine_info(redis_url: str, admin_url: str | None) -> dict[str, str]:
    cpu = "unknown"
    memory_gib = 0.0
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        memory_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        memory_gib = memory_kib / 1024**2
    except (OSError, StopIteration):
        pass
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    server = cast(dict[str, Any], client.info("server"))
    config = {
        **cast(dict[str, str], client.config_get("save")),
        **cast(dict[str, str], client.config_get("appendonly")),
    }
    durability = f"appendonly {config.get('appendonly')}, save {config.get('save')!r}"
    info = {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": cpu,
        "Memory": f"{memory_gib:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "aws-lambda-powertools": version("aws-lambda-powertools"),
        "redis-py": version("redis"),
        "Redis server": f"{server.get('redis_version')} ({durability})",
        "SQLite": sqlite3.sqlite_version,
    }
    if admin_url is not None:
        engine = sa.create_engine(admin_url)
        with engine.connect() as conn:
            info["PostgreSQL"] = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
        engine.dispose()
    return info


# --- scenarios ----------------------------------------------------------------------------------

SCENARIO_LABELS = {
    "pt-default": "Powertools, defaults (expires_after_seconds=3600, no Lambda context)",
    "pt-short": f"Powertools, expires_after_seconds={SHORT_EXPIRY_S}",
    "pt-inprogress": f"Powertools, in-progress expiry {LAMBDA_REMAINING_MS} ms (Lambda context registered)",
    "pt-short-derived": f"Powertools, expires_after_seconds={SHORT_EXPIRY_S}, gateway key derived from the idempotency key",
    "pt-noretry": f"Powertools, in-progress expiry {LAMBDA_REMAINING_MS} ms, no client retry",
    "bk-sqlite-default": "billkeep on SQLite, default lease (30 s)",
    "bk-sqlite": f"billkeep on SQLite, lease {BILLKEEP_SHORT_LEASE_MS} ms",
    "bk-postgresql": f"billkeep on PostgreSQL, lease {BILLKEEP_SHORT_LEASE_MS} ms",
    "bk-noretry": f"billkeep on SQLite, lease {BILLKEEP_SHORT_LEASE_MS} ms, no client retry (recovery worker)",
}


@dataclass
class Setup:
    workdir: Path
    redis_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    made: list[PowertoolsGuard | BillkeepGuard] = field(default_factory=list)

    def gateway_path(self, name: str) -> str:
        return str(self.workdir / f"gateway-{name}.db")

    def powertools(self, name: str, **options: Any) -> PowertoolsGuard:
        guard = PowertoolsGuard(
            name,
            self.redis_url,
            self.gateway_path(name),
            key_prefix=f"billkeep-compare-{self.run_id}-{name}",
            **options,
        )
        self.made.append(guard)
        return guard

    def sqlite_url(self, name: str) -> str:
        """One SQLite database per scenario: a recovery worker drains its whole database, and the
        gateway it resumes with must be that scenario's."""
        return f"sqlite:///{self.workdir / f'billkeep-{name}.db'}"

    def billkeep(self, name: str, url: str, lease_ms: int) -> BillkeepGuard:
        path = self.gateway_path(name)
        tenant_id, customer_id = prepare_billkeep(url, path)
        guard = BillkeepGuard(name, url, path, tenant_id, customer_id, lease_ms)
        self.made.append(guard)
        return guard

    def cleanup(self) -> None:
        for guard in self.made:
            if isinstance(guard, PowertoolsGuard):
                guard.cleanup()
            else:
                guard.close()


def run_crash_scenarios(
    setup: Setup, pg_url: str | None, intents: int, progress: Callable[[str], None]
) -> list[CrashResult]:
    plans: list[tuple[Callable[[], Guard], bool]] = [
        (lambda: setup.powertools("pt-default"), True),
        (lambda: setup.powertools("pt-short", expires_after_seconds=SHORT_EXPIRY_S), True),
        (
            lambda: setup.powertools("pt-inprogress", in_progress_expiry_ms=LAMBDA_REMAINING_MS),
            True,
        ),
        (
            lambda: setup.powertools(
                "pt-short-derived", expires_after_seconds=SHORT_EXPIRY_S, derive_gateway_key=True
            ),
            True,
        ),
        (lambda: setup.powertools("pt-noretry", in_progress_expiry_ms=LAMBDA_REMAINING_MS), False),
        (
            lambda: setup.billkeep(
                "bk-sqlite-default", setup.sqlite_url("bk-sqlite-default"), EngineConfig.lease_ms
            ),
            True,
        ),
        (
            lambda: setup.billkeep(
                "bk-sqlite", setup.sqlite_url("bk-sqlite"), BILLKEEP_SHORT_LEASE_MS
            ),
            True,
        ),
        (
            lambda: setup.billkeep(
                "bk-noretry", setup.sqlite_url("bk-noretry"), BILLKEEP_SHORT_LEASE_MS
            ),
            False,
        ),
    ]
    if pg_url is not None:
        plans.insert(
            7, (lambda: setup.billkeep("bk-postgresql", pg_url, BILLKEEP_SHORT_LEASE_MS), True)
        )
    results = []
    for make, client_retries in plans:
        guard = make()
        started = time.monotonic()
        result = run_crash_scenario(guard, intents, client_retries=client_retries)
        progress(f"crash: {SCENARIO_LABELS[guard.name]}: {time.monotonic() - started:.1f} s")
        if isinstance(guard, PowertoolsGuard):
            result.inprogress_ttls_s = guard.inprogress_ttls_s()
        results.append(result)
    return results


def run_overhead(
    setup: Setup, pg_url: str | None, calls: int, progress: Callable[[str], None]
) -> list[Latency]:
    progress("overhead ...")
    subjects: list[tuple[str, Charger, bool]] = [
        (BARE_SUBJECT, bare_charger(setup.gateway_path("lat-bare")), False),
        ("Powertools + Redis", setup.powertools("lat-pt").charger(crash_after_effect=False), True),
    ]
    for name, subject, url in (
        ("lat-bk-sqlite", "billkeep, SQLite", setup.sqlite_url("lat-bk-sqlite")),
        ("lat-bk-postgresql", "billkeep, PostgreSQL", pg_url),
    ):
        if url is not None:
            guard = setup.billkeep(name, url, EngineConfig.lease_ms)
            subjects.append((subject, guard.charger(crash_after_effect=False), True))
    return measure_interleaved(subjects, calls)


# --- report -------------------------------------------------------------------------------------


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def render_crash_table(results: list[CrashResult]) -> str:
    lines = [
        "| scenario | intents | crashed after paying | payments | intents paid twice+ "
        "| duplicate payments | retries: blocked / errors / total | clients answered "
        "| median s crash -> answer | recorded by the guard |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        retries = (
            f"{r.blocked} / {r.errors} / {r.retries}" if r.client_retries else "no client retry"
        )
        lines.append(
            f"| {SCENARIO_LABELS[r.scenario]} | {r.intents} | {r.crashed} "
            f"| {sum(r.payments.values())} | {r.intents_paid_twice} | {r.duplicates} | {retries} "
            f"| {r.answered if r.client_retries else '-'} | {_median(r.seconds_to_answer)} "
            f"| {r.recorded} |"
        )
    for r in results:
        if r.inprogress_ttls_s:
            lines.append(
                f"\n{SCENARIO_LABELS[r.scenario]}: at the end, {len(r.inprogress_ttls_s)} records "
                f"still INPROGRESS in Redis, with {min(r.inprogress_ttls_s)} to "
                f"{max(r.inprogress_ttls_s)} s of TTL left."
            )
    return "\n".join(lines)


def render_latency_table(results: list[Latency]) -> str:
    bare = next(r for r in results if r.subject == BARE_SUBJECT)
    lines = [
        "| guard | call | calls | mean ms | p50 ms | p95 ms | client CPU ms/call "
        "| p50 overhead over the bare call, ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        first = r is not bare and r.phase == "first"
        overhead = f"{r.p50_ms - bare.p50_ms:.2f}" if first else "-"
        lines.append(
            f"| {r.subject} | {r.phase} | {len(r.samples_ms)} | {r.mean_ms:.2f} | {r.p50_ms:.2f} "
            f"| {r.p95_ms:.2f} | {r.cpu_per_call_ms:.2f} | {overhead} |"
        )
    return "\n".join(lines)


def render_results(
    crash: list[CrashResult],
    latency: list[Latency],
    info: dict[str, str],
    intents: int,
    seconds: float,
) -> str:
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    return "\n".join(
        [
            RESULTS_START,
            f"Generated by `python -m bench.compare_powertools` at "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds:.0f} s.",
            "",
            "Machine:",
            "",
            machine,
            "",
            f"Crash between the payment and the record, {intents} intents per scenario, "
            f"retries every {RETRY_INTERVAL_S:g} s for {RETRY_ROUNDS} rounds "
            f"({(RETRY_ROUNDS - 1) * RETRY_INTERVAL_S:g} s) after all crashes:",
            "",
            render_crash_table(crash),
            "",
            "Per-call latency without crashes (same run, one thread, the gateway is the same "
            "file-backed FakeGateway for every row):",
            "",
            render_latency_table(latency),
            RESULTS_END,
        ]
    )


def write_results(path: Path, block: str) -> None:
    text = (
        path.read_text()
        if path.exists()
        else f"# billkeep vs Powertools\n\n{RESULTS_START}\n{RESULTS_END}\n"
    )
    if RESULTS_START not in text or RESULTS_END not in text:
        text = text.rstrip("\n") + f"\n\n{RESULTS_START}\n{RESULTS_END}\n"
    head, rest = text.split(RESULTS_START, 1)
    _old, tail = rest.split(RESULTS_END, 1)
    path.write_text(head + block + tail)


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BILLKEEP_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument(
        "--pg-admin-url", default=os.environ.get("BILLKEEP_BENCH_PG_URL", DEFAULT_PG_ADMIN_URL)
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--intents", type=int, default=INTENTS)
    parser.add_argument("--calls", type=int, default=OVERHEAD_CALLS, help="per latency row")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS_PATH.name}")
    args = parser.parse_args(argv)
    started = time.monotonic()
    admin_url = None if args.skip_postgres else str(args.pg_admin_url)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    info = machine_info(args.redis_url, admin_url)
    info["Load average at start (1/5/15 min)"] = _load_average()
    workdir = Path(tempfile.mkdtemp(prefix="billkeep-compare-"))
    setup = Setup(workdir, args.redis_url)
    try:
        with optional_pg_database(admin_url) as pg_url:
            crash = run_crash_scenarios(setup, pg_url, args.intents, progress)
            latency = run_overhead(setup, pg_url, args.calls, progress)
    finally:
        setup.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    info["Load average at end (1/5/15 min)"] = _load_average()
    block = render_results(crash, latency, info, args.intents, time.monotonic() - started)
    print(block)
    if args.write_docs:
        write_results(DOCS_PATH, block)
        progress(f"wrote {DOCS_PATH}")
    return 0


@contextmanager
def optional_pg_database(admin_url: str | None) -> Iterator[str | None]:
    if admin_url is None:
        yield None
        return
    with scratch_pg_database(admin_url) as url:
        yield url


if __name__ == "__main__":
    raise SystemExit(main())
