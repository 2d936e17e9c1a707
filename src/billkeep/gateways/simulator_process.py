"""Run the gateway simulator as a real process: start on a free port, wait until ready, stop.

Used by the demo and by tests that need real HTTP between billkeep and a Stripe-speaking gateway.
`run_simulator_process(...)` is a context manager; the process is always stopped on exit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "SIMULATOR_API_KEY",
    "SimulatorProcess",
    "free_port",
    "run_simulator_process",
]

SIMULATOR_API_KEY = "sk_test_billkeep_simulator"  # the simulator accepts any sk_test_ key
STARTUP_TIMEOUT_MS = 15_000
STOP_TIMEOUT_MS = 10_000
CONTROL_TIMEOUT_MS = 10_000
_READY_POLL_MS = 50
_MAX_SEARCH_PAGES = 1_000
_LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on localhost right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((_LOCALHOST, 0))
        return int(sock.getsockname()[1])


class SimulatorProcess:
    """`python -m billkeep.gateways.simulator` on localhost; its state lives in `db`."""

    def __init__(
        self,
        db: Path | str,
        *,
        port: int | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        seed: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.db = Path(db)
        self.port = port or free_port()
        self.url = f"http://{_LOCALHOST}:{self.port}"
        self.api_key = SIMULATOR_API_KEY
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.seed = seed
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    def _args(self) -> list[str]:
        args = [
            sys.executable, "-m", "billkeep.gateways.simulator",
            "--host", _LOCALHOST, "--port", str(self.port), "--db", str(self.db),
        ]  # fmt: skip
        if self.webhook_url:
            assert self.webhook_secret, "the simulator signs every webhook: a secret is required"
            args += ["--webhook-url", self.webhook_url, "--webhook-secret", self.webhook_secret]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        return args + self.extra_args

    def start(self) -> SimulatorProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ)
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"gateway simulator exited at start: {stderr.strip()}")
            if self._ready():
                return self
            time.sleep(_READY_POLL_MS / 1000)
        self.stop()
        raise RuntimeError(f"gateway simulator not ready after {STARTUP_TIMEOUT_MS} ms")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/_sim/state", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, *, hard: bool = False) -> None:
        """Stop the process (SIGKILL when `hard`, as a crash); waits for it to exit."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill() if hard else proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_MS / 1000)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_MS / 1000)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self, *, hard: bool = True) -> SimulatorProcess:
        """Stop (by default as a crash) and start again on the same port and database."""
        self.stop(hard=hard)
        return self.start()

    # --- the simulator's control API (/_sim) ----------------------------------------------------
    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method, f"{self.url}{path}", json=body, timeout=CONTROL_TIMEOUT_MS / 1000
        )
        if response.status_code != 200:
            raise RuntimeError(f"simulator {method} {path}: {response.status_code} {response.text}")
        return response.json()

    def state(self) -> Any:
        return self.control("GET", "/_sim/state")

    def set_faults(self, plan: dict[str, Any]) -> Any:
        return self.control("POST", "/_sim/faults", plan)

    def clear_faults(self) -> Any:
        return self.control("DELETE", "/_sim/faults")

    def settle(self, payment_intent: str) -> Any:
        return self.control("POST", f"/_sim/payment_intents/{payment_intent}/settle")

    def flush_webhooks(self) -> Any:
        return self.control("POST", "/_sim/webhooks/flush")

    def processing_payment_intents(self) -> list[str]:
        """Ids of the asynchronous payments still `processing` (Stripe search, paged)."""
        ids: list[str] = []
        params = {"query": "status:'processing'", "limit": "100"}
        for _ in range(_MAX_SEARCH_PAGES):
            response = httpx.get(
                f"{self.url}/v1/payment_intents/search",
                params=params,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=CONTROL_TIMEOUT_MS / 1000,
            )
            response.raise_for_status()
            page = response.json()
            ids.extend(str(item["id"]) for item in page["data"])
            if not page.get("has_more") or not page.get("next_page"):
                break
            params["page"] = str(page["next_page"])
        return ids

    def settle_all_processing(self) -> int:
        """Settle every asynchronous payment now (as the bank eventually would)."""
        pending = self.processing_payment_intents()
        for intent_id in pending:
            self.settle(intent_id)
        return len(pending)


@contextmanager
def run_simulator_process(
    db: Path | str,
    *,
    port: int | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    seed: int | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[SimulatorProcess]:
    """Start a simulator, yield it once it answers, and always stop it."""
    sim = SimulatorProcess(
        db,
        port=port,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        seed=seed,
        extra_args=extra_args,
    )
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
