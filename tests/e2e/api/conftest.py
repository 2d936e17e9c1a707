"""A real `billkeep serve` subprocess on PostgreSQL, on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from billkeep.domain.clock import SystemClock
from billkeep.engine.tenants import TenantStore
from billkeep.storage.database import Database

STARTUP_TIMEOUT_S = 90.0  # generous: a loaded 2-core machine starts uvicorn workers slowly
STOP_TIMEOUT_S = 10.0
BILLKEEP_SCRIPT = str(Path(sys.executable).parent / "billkeep")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    database_url: str
    gateway_path: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            raise AssertionError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not become healthy:\n{server.log()}")


def start(server: Server, *, workers: int = 1, env: dict[str, str] | None = None) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    full_env = {
        **os.environ,
        "BILLKEEP_DATABASE_URL": server.database_url,
        "BILLKEEP_FAKE_GATEWAY_PATH": server.gateway_path,
        "BILLKEEP_SECRET_KEY": "e2e-secret-key-0123456789abcdefghijklmnop",
        **(env or {}),
    }
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(
            [
                BILLKEEP_SCRIPT,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_healthy(server)


def stop(server: Server, sig: int = signal.SIGTERM) -> None:
    process = server.process
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, sig)  # the server and its uvicorn workers: our own process group
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)


@dataclass
class Tenant:
    tenant_id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def make_server(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(*, workers: int = 1, env: dict[str, str] | None = None) -> Server:
        server = Server(
            url=f"http://127.0.0.1:{free_port()}",
            database_url=pg_url,
            gateway_path=str(tmp_path / "fake-gateway.sqlite"),
            log_path=tmp_path / f"server-{len(servers)}.log",
        )
        servers.append(server)
        start(server, workers=workers, env=env)
        return server

    yield make
    for server in servers:
        stop(server)


@pytest.fixture
def e2e_tenant(pg_url: str) -> Tenant:
    db = Database(pg_url)
    try:
        tenant_id, key = TenantStore(db).create_tenant("e2e", SystemClock().now_ms())
    finally:
        db.dispose()
    return Tenant(tenant_id, key)


@contextmanager
def client(server: Server, tenant: Tenant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=tenant.auth, timeout=30) as http:
        yield http


def create_customer(server: Server, tenant: Tenant, key: str = "e2e-customer") -> str:
    with client(server, tenant) as http:
        response = http.post(
            "/v1/customers",
            json={"email": "e2e@example.com", "payment_method": "pm_card_visa"},
            headers={"Idempotency-Key": key},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
