"""Fixtures for the gateway simulator: a real subprocess on a free port, and a webhook receiver."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

API_KEY = "sk_test_simulator"
WEBHOOK_SECRET = "whsec_test_simulator"
_STARTUP_TIMEOUT_S = 60.0  # generous: a loaded 2-core machine starts Python slowly


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimProcess:
    """`python -m billkeep.gateways.simulator` in a subprocess; always stopped by its fixture."""

    def __init__(self, db: Path, extra_args: list[str]) -> None:
        self.db = db
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # One client for the whole run: building an httpx client (TLS context) costs ~40 ms.
        self.http = httpx.Client(timeout=10)

    def start(self) -> SimProcess:
        args = [
            sys.executable,
            "-m",
            "billkeep.gateways.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ}
        )
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if self.http.get(f"{self.url}/_sim/state", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("simulator did not start in time")

    def stop(self, *, hard: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if hard:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, *, hard: bool = True) -> SimProcess:
        self.stop(hard=hard)
        return self.start()

    def client(self) -> stripe.StripeClient:
        return stripe.StripeClient(API_KEY, base_addresses={"api": self.url}, max_network_retries=0)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.url}{path}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def state(self) -> Any:
        return self.control("GET", "/_sim/state")

    def post(
        self, path: str, data: dict[str, str], *, key: str | None = None, timeout_s: float = 10
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.http.post(f"{self.url}{path}", data=data, headers=headers, timeout=timeout_s)

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.http.get(
            f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {API_KEY}"}
        )


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[SimProcess] = []

    def make(*extra_args: str, db: Path | None = None) -> SimProcess:
        sim = SimProcess(db or tmp_path / f"sim{len(started)}.db", list(extra_args))
        started.append(sim)
        return sim.start()

    yield make
    for sim in started:
        sim.stop()
        sim.http.close()


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One process for a module's tests that assert only on their own objects (saves startups)."""
    sim = SimProcess(
        tmp_path_factory.mktemp("shared") / "sim.db", ["--seed", "3", "--async-settle-ms", "0"]
    )
    sim.start()
    yield sim
    sim.stop()
    sim.http.close()


@pytest.fixture
def sim(sim_factory: Any) -> SimProcess:
    return sim_factory("--seed", "7", "--async-settle-ms", "0")  # type: ignore[no-any-return]


@dataclass
class Received:
    body: bytes
    signature: str

    @property
    def event(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A local endpoint recording every POST; answers 500 to the first `fail_first` requests."""

    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    requests_seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def wait_for(self, count: int, timeout_s: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            raise AssertionError(f"expected {count} webhooks, got {len(self.received)}")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    state = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.requests_seen += 1
                failing = state.requests_seen <= state.fail_first
                if not failing:
                    state.received.append(Received(body, self.headers.get("Stripe-Signature", "")))
            self.send_response(500 if failing else 200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
