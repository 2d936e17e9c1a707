"""Engine throughput: charge.create through `Billkeep`, first execution and replay, per engine.

For SQLite (a file) and PostgreSQL (a fresh database on the local server, dropped afterwards) it
measures commands per second of:
- first execution: a new idempotency key each time (record, charge + attempt, gateway call with the
  in-process FakeGateway, outcome + ledger entry: three write transactions and one read);
- replay: the same key and request again (one transaction, returns the stored response);
at concurrency 1 (one thread), 8 threads (one shared `Billkeep`), and 8 processes (one `Billkeep`
each), because threads share one GIL. Beside it, `pgbench` measures single-row INSERT transactions
per second on the same server in the same run, the yardstick for the PostgreSQL numbers.

Run: `.venv/bin/python -m bench.engine` (about two minutes; `--help` for options). It prints a
table and rewrites the "Engine" section of docs/benchmarks.md (creating the file if needed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier as ProcessBarrier
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from billkeep.domain.clock import SystemClock
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head

__all__ = ["Measurement", "main", "run_benchmark"]

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION_HEADING = "## Engine"

PHASE_SECONDS = 3.0  # per measurement; 6 measurements per engine
PGBENCH_SECONDS = 10
PGBENCH_CLIENTS = 8
PGBENCH_THREADS = 2
PARALLELISM = 8
WARMUP_COMMANDS = 3
PROFILE_COMMANDS = 10
SUBPROCESS_TIMEOUT_S = 120
# PostgreSQL targets at concurrency 8, as fractions of pgbench's single-row insert TPS.
FIRST_TARGET = 0.30
REPLAY_TARGET = 0.60

PGBENCH_SCRIPT = """\
\\set id random(1, 9000000000000000000)
\\set v random(1, 1000000)
INSERT INTO bench_t(id, v) VALUES (:id, :v);
"""


@dataclass(frozen=True)
class Measurement:
    engine: str
    phase: str  # "first" or "replay"
    mode: str  # "1 thread", "8 threads", "8 processes"
    commands: int
    seconds: float
    cpu_seconds: float  # CPU time of the Python side (all threads / all processes)

    @property
    def per_second(self) -> float:
        return self.commands / self.seconds

    @property
    def cores_busy(self) -> float:
        return self.cpu_seconds / self.seconds


# --- databases -------------------------------------------------------------------------------------


def _admin_engine(admin_url: str) -> sa.Engine:
    return sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")


@contextmanager
def scratch_pg_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server of `admin_url`, dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine(admin_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def scratch_sqlite_database() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="billkeep-bench-")
    try:
        yield f"sqlite:///{directory}/bench.db"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def open_billkeep(url: str) -> Billkeep:
    return Billkeep(
        Database(url), StaticGatewayDirectory(FakeGateway(":memory:")), clock=SystemClock()
    )


def prepare(url: str) -> tuple[str, str]:
    """Migrate; create a tenant and a customer with a default card. Returns (tenant, customer)."""
    db = Database(url)
    upgrade_to_head(db)
    db.dispose()
    bk = open_billkeep(url)
    try:
        tenant_id, _key = bk.tenants.create_tenant("bench", bk.clock.now_ms())
        customer = bk.create_customer(
            tenant_id, {"email": "bench@example.com", "payment_method": "pm_card_visa"}, "cus"
        )
        assert customer.status == 201, customer.body_text
        return tenant_id, str(customer.body()["id"])
    finally:
        bk.close()


# --- driving commands ------------------------------------------------------------------------------


def _charge(bk: Billkeep, tenant_id: str, customer_id: str, key: str) -> bool:
    request = {"customer_id": customer_id, "amount": 1000, "currency": "usd"}
    result = bk.execute(tenant_id, "charge.create", request, idempotency_key=key)
    assert result.status == 201 and result.final, result.body_text
    return result.replayed


def _drive(
    bk: Billkeep, tenant_id: str, customer_id: str, keys: list[str], replay: bool, seconds: float
) -> int:
    """Run commands for `seconds`: new keys (appended to `keys`), or replays of `keys` in turn."""
    deadline = time.monotonic() + seconds
    done = 0
    prefix = uuid.uuid4().hex[:12]
    while time.monotonic() < deadline:
        if replay:
            key = keys[done % len(keys)]
        else:
            key = f"{prefix}-{done}"
            keys.append(key)
        was_replayed = _charge(bk, tenant_id, customer_id, key)
        assert was_replayed == replay, "first executions run, replays replay"
        done += 1
    return done


def _warm_up(bk: Billkeep, tenant_id: str, customer_id: str) -> None:
    keys: list[str] = []
    for _ in range(WARMUP_COMMANDS):
        key = f"warm-{uuid.uuid4().hex}"
        _charge(bk, tenant_id, customer_id, key)
        keys.append(key)
    for key in keys:
        _charge(bk, tenant_id, customer_id, key)


def _thread_phase(
    bk: Billkeep,
    tenant_id: str,
    customer_id: str,
    keys: list[list[str]],
    replay: bool,
    seconds: float,
) -> tuple[int, float, float]:
    """One phase on len(keys) threads: (commands, wall seconds, process CPU seconds)."""
    counts = [0] * len(keys)
    barrier = threading.Barrier(len(keys) + 1)

    def work(index: int) -> None:
        barrier.wait()
        counts[index] = _drive(bk, tenant_id, customer_id, keys[index], replay, seconds)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(keys))]
    for worker in workers:
        worker.start()
    barrier.wait()
    wall0, cpu0 = time.monotonic(), time.process_time()
    for worker in workers:
        worker.join()
    return sum(counts), time.monotonic() - wall0, time.process_time() - cpu0


def measure_threads(
    engine: str, url: str, tenant_id: str, customer_id: str, threads: int, seconds: float
) -> list[Measurement]:
    """First execution, then replay of the same keys, with `threads` threads sharing one engine."""
    bk = open_billkeep(url)
    try:
        _warm_up(bk, tenant_id, customer_id)
        keys: list[list[str]] = [[] for _ in range(threads)]
        mode = "1 thread" if threads == 1 else f"{threads} threads"
        results = []
        for phase in ("first", "replay"):
            count, wall, cpu = _thread_phase(
                bk, tenant_id, customer_id, keys, phase == "replay", seconds
            )
            results.append(Measurement(engine, phase, mode, count, wall, cpu))
        return results
    finally:
        bk.close()


def _process_worker(
    url: str,
    tenant_id: str,
    customer_id: str,
    seconds: float,
    barrier: ProcessBarrier,
    out: Any,
) -> None:
    bk = open_billkeep(url)
    try:
        _warm_up(bk, tenant_id, customer_id)
        keys: list[str] = []
        for replay in (False, True):
            barrier.wait()
            wall0, cpu0 = time.monotonic(), time.process_time()
            count = _drive(bk, tenant_id, customer_id, keys, replay, seconds)
            out.put((replay, count, time.monotonic() - wall0, time.process_time() - cpu0))
    finally:
        bk.close()


def measure_processes(
    engine: str, url: str, tenant_id: str, customer_id: str, processes: int, seconds: float
) -> list[Measurement]:
    """The same with `processes` processes, one `Billkeep` each (no shared GIL)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    out = context.Queue()
    workers = [
        context.Process(
            target=_process_worker, args=(url, tenant_id, customer_id, seconds, barrier, out)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    reports = [out.get(timeout=SUBPROCESS_TIMEOUT_S) for _ in range(2 * processes)]
    for worker in workers:
        worker.join(timeout=SUBPROCESS_TIMEOUT_S)
        assert worker.exitcode == 0, f"bench worker exited with {worker.exitcode}"
    results = []
    for phase, replay in (("first", False), ("replay", True)):
        mine = [r for r in reports if r[0] is replay]
        wall = max(r[2] for r in mine)
        results.append(
            Measurement(
                engine,
                phase,
                f"{processes} processes",
                sum(r[1] for r in mine),
                wall,
                sum(r[3] for r in mine),
            )
        )
    return results


@dataclass(frozen=True)
class StatementProfile:
    engine: str
    first_statements: float  # SQL statements per first execution
    first_transactions: float
    replay_statements: float
    replay_transactions: float


def statement_profile(engine: str, url: str, tenant_id: str, customer_id: str) -> StatementProfile:
    """SQL statements and transactions per command, counted by SQLAlchemy events (one thread)."""
    bk = open_billkeep(url)
    counts = {"statements": 0, "transactions": 0}

    def on_statement(*_args: Any) -> None:
        counts["statements"] += 1

    def on_commit(*_args: Any) -> None:
        counts["transactions"] += 1

    try:
        _warm_up(bk, tenant_id, customer_id)
        sa.event.listen(bk.db.engine, "before_cursor_execute", on_statement)
        sa.event.listen(bk.db.engine, "commit", on_commit)
        keys = [f"profile-{uuid.uuid4().hex}" for _ in range(PROFILE_COMMANDS)]
        per_phase = []
        for _phase in ("first", "replay"):
            counts.update(statements=0, transactions=0)
            for key in keys:
                _charge(bk, tenant_id, customer_id, key)
            per_phase.append(
                (
                    counts["statements"] / PROFILE_COMMANDS,
                    counts["transactions"] / PROFILE_COMMANDS,
                )
            )
        return StatementProfile(engine, *per_phase[0], *per_phase[1])
    finally:
        bk.close()


def measure_engine(
    engine: str, url: str, seconds: float
) -> tuple[list[Measurement], StatementProfile]:
    tenant_id, customer_id = prepare(url)
    profile = statement_profile(engine, url, tenant_id, customer_id)
    results = measure_threads(engine, url, tenant_id, customer_id, 1, seconds)
    results += measure_threads(engine, url, tenant_id, customer_id, PARALLELISM, seconds)
    results += measure_processes(engine, url, tenant_id, customer_id, PARALLELISM, seconds)
    return results, profile


# --- pgbench -----------------------------------------------------------------------------------------


def find_pgbench() -> str:
    found = shutil.which("pgbench")
    candidates = [found] if found else []
    candidates += sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin/pgbench")), reverse=True)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit("pgbench not found (install postgresql-client or put it on PATH)")


def pgbench_insert_tps(admin_url: str, seconds: int) -> float:
    """Single-row INSERT transactions per second, -c 8 -j 2, on a scratch database."""
    with scratch_pg_database(admin_url, "bench_pgbench") as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(
                sa.text("CREATE TABLE bench_t (id bigint PRIMARY KEY, v integer NOT NULL)")
            )
        engine.dispose()
        parsed = make_url(url)
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
            script.write(PGBENCH_SCRIPT)
        env = dict(os.environ)
        if parsed.password:
            env["PGPASSWORD"] = parsed.password
        command = [
            find_pgbench(),
            "-n",
            f"-c{PGBENCH_CLIENTS}",
            f"-j{PGBENCH_THREADS}",
            f"-T{seconds}",
            "-f",
            script.name,
            "-h",
            parsed.host or "127.0.0.1",
            "-p",
            str(parsed.port or 5432),
            "-U",
            parsed.username or "postgres",
            str(parsed.database),
        ]
        try:
            completed = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                check=True,
                timeout=seconds + SUBPROCESS_TIMEOUT_S,
            )
        finally:
            os.unlink(script.name)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", completed.stdout)
    if match is None:
        raise RuntimeError(f"cannot read pgbench output:\n{completed.stdout}\n{completed.stderr}")
    return float(match.group(1))


# --- the machine -------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def machine_info(admin_url: str | None) -> dict[str, str]:
    info = {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": _cpu_model(),
        "Memory": f"{_memory_gib():.1f} GiB",
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "SQLAlchemy": sa.__version__,
    }
    if admin_url is not None:
        engine = _admin_engine(admin_url)
        with engine.connect() as conn:
            info["PostgreSQL"] = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
        engine.dispose()
    return info


# --- report ------------------------------------------------------------------------------------------


def render_table(results: list[Measurement], pgbench_tps: float | None) -> str:
    lines = [
        "| engine | phase | concurrency | commands | commands/s | Python CPU cores busy |"
        + (" vs pgbench insert TPS |" if pgbench_tps else ""),
        "|---|---|---|---:|---:|---:|" + ("---:|" if pgbench_tps else ""),
    ]
    for m in results:
        row = (
            f"| {m.engine} | {m.phase} | {m.mode} | {m.commands} | {m.per_second:,.0f} "
            f"| {m.cores_busy:.2f} |"
        )
        if pgbench_tps:
            ratio = f" {m.per_second / pgbench_tps:.1%} |" if m.engine == "postgresql" else " |"
            row += ratio
        lines.append(row)
    if pgbench_tps:
        lines.append(
            f"| postgresql | pgbench INSERT | {PGBENCH_CLIENTS} clients, {PGBENCH_THREADS} threads "
            f"| | {pgbench_tps:,.0f} | | 100% |"
        )
    return "\n".join(lines)


def verdicts(results: list[Measurement], pgbench_tps: float) -> list[str]:
    lines = []
    for phase, target in (("first", FIRST_TARGET), ("replay", REPLAY_TARGET)):
        best = max(
            (m for m in results if m.engine == "postgresql" and m.phase == phase and m.mode != "1 thread"),
            key=lambda m: m.per_second,
        )  # fmt: skip
        ratio = best.per_second / pgbench_tps
        status = "met" if ratio >= target else "NOT met"
        lines.append(
            f"- PostgreSQL {phase} execution at concurrency {PARALLELISM} (best: {best.mode}): "
            f"{best.per_second:,.0f}/s = {ratio:.1%} of pgbench's {pgbench_tps:,.0f} insert TPS; "
            f"target {target:.0%}: {status}."
        )
    return lines


def gil_note(results: list[Measurement]) -> list[str]:
    lines = []
    for engine in sorted({m.engine for m in results}):
        by_mode = {(m.phase, m.mode): m for m in results if m.engine == engine}
        for phase in ("first", "replay"):
            one = by_mode.get((phase, "1 thread"))
            threads = by_mode.get((phase, f"{PARALLELISM} threads"))
            procs = by_mode.get((phase, f"{PARALLELISM} processes"))
            if not (one and threads and procs):
                continue
            lines.append(
                f"- {engine} {phase}: 1 thread {one.per_second:,.0f}/s "
                f"({one.cores_busy:.2f} cores); {PARALLELISM} threads {threads.per_second:,.0f}/s "
                f"(x{threads.per_second / one.per_second:.2f}, {threads.cores_busy:.2f} cores); "
                f"{PARALLELISM} processes {procs.per_second:,.0f}/s "
                f"(x{procs.per_second / one.per_second:.2f}, {procs.cores_busy:.2f} cores)."
            )
    return lines


def render_profiles(profiles: list[StatementProfile]) -> list[str]:
    lines = [
        "| engine | SQL statements / first execution | transactions / first execution "
        "| SQL statements / replay | transactions / replay |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in profiles:
        lines.append(
            f"| {p.engine} | {p.first_statements:.1f} | {p.first_transactions:.1f} "
            f"| {p.replay_statements:.1f} | {p.replay_transactions:.1f} |"
        )
    return lines


def render_section(
    results: list[Measurement],
    profiles: list[StatementProfile],
    pgbench_tps: float | None,
    info: dict[str, str],
    seconds: float,
) -> str:
    parts = [
        SECTION_HEADING,
        "",
        "`python -m bench.engine`: `charge.create` through `Billkeep` with the in-process "
        "FakeGateway (`:memory:`), a new idempotency key per first execution, the same key and "
        f"request for replays; each measurement runs {seconds:g} s after a warm-up. Threads share "
        "one `Billkeep`; processes have one each. The PostgreSQL database is created fresh by the "
        "bench on the local server; the pgbench yardstick is a single-row "
        "`INSERT INTO bench_t(id, v)` (bigint primary key) per transaction, "
        f"`-c {PGBENCH_CLIENTS} -j {PGBENCH_THREADS} -T {PGBENCH_SECONDS} -n`, on the same server "
        "in the same run.",
        "",
        f"Run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        + ", ".join(f"{k} {v}" for k, v in info.items())
        + ".",
        "",
        render_table(results, pgbench_tps),
        "",
        "Work per command (counted with SQLAlchemy events, one thread; a transaction is one "
        "BEGIN/COMMIT pair, read-only ones included; SQLite's statements include its explicit "
        "BEGIN; pgbench's unit is one statement in one transaction):",
        "",
        *render_profiles(profiles),
        "",
        "A first execution is three durable write transactions by design (the intent and its "
        "claim; the charge and its attempt, before the gateway call; the outcome with its ledger "
        "entries, after it) plus a read before the call, so it cannot approach a one-statement "
        "insert: its cost is its statement count times a round trip, plus the Python CPU of "
        "building those statements (the cores-busy column at 1 thread divided by commands/s).",
        "",
        "Scaling (the GIL question: a thread-bound run that stays near 1.0 Python core busy is "
        "serialised by the interpreter, not by the database):",
        "",
        *gil_note(results),
    ]
    if pgbench_tps:
        parts += ["", "Targets (PostgreSQL, concurrency 8, relative to pgbench):", ""]
        parts += verdicts(results, pgbench_tps)
    return "\n".join(parts) + "\n"


def intro(info: dict[str, str]) -> str:
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    return (
        "# Benchmarks\n\n"
        "Throughput measurements of billkeep's components. Each section is produced by a bench "
        "script under `bench/` and names the command that regenerates it. Numbers are from one "
        "machine, with whatever else ran on it at the time; read them as orders of magnitude and "
        "ratios, not guarantees. Sections of other components are added from their "
        "`docs/benchmarks-*.md` files.\n\n"
        f"The machine the first numbers came from:\n\n{machine}\n\n"
    )


def write_section(path: Path, section: str, info: dict[str, str]) -> None:
    """Replace (or append) this bench's section; leave every other section untouched."""
    text = path.read_text() if path.exists() else intro(info)
    pattern = re.compile(rf"^{re.escape(SECTION_HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


# --- main --------------------------------------------------------------------------------------------


def run_benchmark(
    admin_url: str | None, seconds: float, progress: Callable[[str], None]
) -> tuple[list[Measurement], list[StatementProfile], float | None]:
    results: list[Measurement] = []
    profiles: list[StatementProfile] = []
    with scratch_sqlite_database() as url:
        progress("sqlite ...")
        measured, profile = measure_engine("sqlite", url, seconds)
        results += measured
        profiles.append(profile)
    pgbench_tps = None
    if admin_url is not None:
        with scratch_pg_database(admin_url, "bench_billkeep") as url:
            progress("postgresql ...")
            measured, profile = measure_engine("postgresql", url, seconds)
            results += measured
            profiles.append(profile)
        progress("pgbench ...")
        pgbench_tps = pgbench_insert_tps(admin_url, PGBENCH_SECONDS)
    return results, profiles, pgbench_tps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--pg-admin-url", default=os.environ.get("BILLKEEP_BENCH_PG_URL", DEFAULT_PG_ADMIN_URL)
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--seconds", type=float, default=PHASE_SECONDS, help="per measurement")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOCS_PATH.name}")
    args = parser.parse_args(argv)
    admin_url = None if args.skip_postgres else str(args.pg_admin_url)
    started = time.monotonic()
    info = machine_info(admin_url)
    load_before = _load_average()
    results, profiles, pgbench_tps = run_benchmark(
        admin_url, args.seconds, lambda s: print(s, file=sys.stderr, flush=True)
    )
    run_info = {**info, "load average (1 min) before/after": f"{load_before}/{_load_average()}"}
    section = render_section(results, profiles, pgbench_tps, run_info, args.seconds)
    print(section)
    if not args.no_write:
        write_section(DOCS_PATH, section, info)
        print(f"wrote {DOCS_PATH}", file=sys.stderr)
    print(f"bench took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
