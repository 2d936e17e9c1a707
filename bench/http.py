"""HTTP load benchmark: POST /v1/charges against `billkeep serve` on PostgreSQL.

    .venv/bin/python -m bench.http [--duration-s 20] [--concurrency 32] [--workers 2]

(Run it as a module: run as a script, its directory would come first on sys.path and this file
would shadow the standard library's `http` package; the guard below handles that case too.)

Creates a throw-away database on the PostgreSQL server at --admin-url, starts
`billkeep serve --workers N` on a free port with the in-process zero-latency fake gateway
(`:memory:` per worker), creates a tenant and a customer, then runs an async httpx load at the
given concurrency: 90% first executions with a new Idempotency-Key, 10% retries of an
already-answered key with the same body (replays). Prints and writes docs/benchmarks-http.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: do not let this file shadow the stdlib `http` package

import argparse
import asyncio
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import httpx
import sqlalchemy as sa

from billkeep.domain.clock import SystemClock
from billkeep.engine.tenants import TenantStore
from billkeep.storage.database import Database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = os.environ.get(
    "BILLKEEP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REPLAY_FRACTION = 0.10
WARMUP_S = 3.0
STARTUP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0


@dataclass
class Samples:
    first_ms: list[float] = field(default_factory=list)
    replay_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def load(
    base_url: str, key: str, customer_id: str, duration_s: float, concurrency: int, record: bool
) -> tuple[Samples, float]:
    samples = Samples()
    answered: list[tuple[str, dict[str, object]]] = []
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=REQUEST_TIMEOUT_S,
        limits=limits,
    ) as http:

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                replay = bool(answered) and rng.random() < REPLAY_FRACTION
                if replay:
                    idem, body = rng.choice(answered)
                else:
                    idem = uuid.uuid4().hex
                    body = {
                        "customer_id": customer_id,
                        "amount": rng.randint(100, 10_000),
                        "currency": "usd",
                    }
                started = time.perf_counter()
                response = await http.post(
                    "/v1/charges", json=body, headers={"Idempotency-Key": idem}
                )
                elapsed_ms = (time.perf_counter() - started) * 1000
                if not record:
                    continue
                samples.statuses[response.status_code] = (
                    samples.statuses.get(response.status_code, 0) + 1
                )
                (samples.replay_ms if replay else samples.first_ms).append(elapsed_ms)
                if not replay and response.status_code == 201:
                    answered.append((idem, body))

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return samples, time.perf_counter() - started


def start_server(database_url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BILLKEEP_DATABASE_URL": database_url,
        "BILLKEEP_DEFAULT_GATEWAY": "fake",
        "BILLKEEP_SECRET_KEY": os.environ.get("BILLKEEP_SECRET_KEY", "bench-secret-" + "x" * 32),
        "BILLKEEP_LOG_LEVEL": "WARNING",  # access logs off: measure the API, not the terminal
    }
    env.pop("BILLKEEP_FAKE_GATEWAY_PATH", None)  # `:memory:` per worker on PostgreSQL
    script = str(Path(sys.executable).parent / "billkeep")
    process = subprocess.Popen(
        [script, "serve", "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("server exited during startup")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise SystemExit("server did not start")


def report(args: argparse.Namespace, samples: Samples, elapsed_s: float, pg_version: str) -> str:
    total = len(samples.first_ms) + len(samples.replay_ms)
    rps = total / elapsed_s
    lines = [
        "# HTTP benchmark: POST /v1/charges",
        "",
        f"`bench/http.py --duration-s {args.duration_s} --concurrency {args.concurrency} "
        f"--workers {args.workers}`: `billkeep serve --workers {args.workers}` on PostgreSQL, "
        "in-process zero-latency fake gateway, async httpx client on the same machine, "
        f"{int(REPLAY_FRACTION * 100)}% of requests retried with an already-answered key.",
        "",
        "## Machine",
        f"- CPUs (nproc): {os.cpu_count()}; model: {cpu_model()}",
        f"- PostgreSQL: {pg_version}",
        f"- Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"- load average at the end of the run (1/5/15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
        " (other processes on the machine compete with the server, PostgreSQL and the client)",
        "",
        "## Results",
        f"- requests: {total} in {elapsed_s:.1f} s -> **{rps:.0f} req/s** (target >= 1,500)",
        f"- statuses: {dict(sorted(samples.statuses.items()))}",
        "",
        "| kind | count | p50 ms | p99 ms | mean ms |",
        "|---|---|---|---|---|",
    ]
    for kind, values in (("first execution", samples.first_ms), ("replay", samples.replay_ms)):
        mean = statistics.fmean(values) if values else float("nan")
        lines.append(
            f"| {kind} | {len(values)} | {percentile(values, 50):.1f} | "
            f"{percentile(values, 99):.1f} | {mean:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks-http.md")
    args = parser.parse_args()

    name = f"billkeep_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        pg_version = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
    database_url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    process = None
    try:
        port = free_port()
        process = start_server(database_url, port, args.workers)
        db = Database(database_url)
        _tenant_id, key = TenantStore(db).create_tenant("bench", SystemClock().now_ms())
        db.dispose()
        base_url = f"http://127.0.0.1:{port}"
        customer = httpx.post(
            f"{base_url}/v1/customers",
            json={"email": "bench@example.com", "payment_method": "pm_card_visa"},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "bench-customer"},
        )
        customer.raise_for_status()
        customer_id = customer.json()["id"]
        asyncio.run(load(base_url, key, customer_id, WARMUP_S, args.concurrency, record=False))
        samples, elapsed_s = asyncio.run(
            load(base_url, key, customer_id, args.duration_s, args.concurrency, record=True)
        )
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    text = report(args, samples, elapsed_s, pg_version)
    print(text)
    args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
