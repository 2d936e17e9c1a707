"""Supervise real `billkeep serve` / `billkeep worker` subprocesses: start, kill -9, restart.

Each process runs in its own session (process group), so a `kill -9` reaches uvicorn's children
too, and `stop_all` always leaves nothing behind (also registered with `atexit`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from billkeep.gateways.simulator_process import free_port

__all__ = ["BILLKEEP_SCRIPT", "ManagedProcess", "Supervisor"]

BILLKEEP_SCRIPT = str(Path(sys.executable).parent / "billkeep")
STARTUP_TIMEOUT_MS = 60_000  # a loaded CI machine starts Python slowly
STOP_TIMEOUT_MS = 10_000
_HEALTH_POLL_MS = 100
_LOCALHOST = "127.0.0.1"


@dataclass
class ManagedProcess:
    """One `billkeep serve` (kind "server", with a port) or `billkeep worker` (kind "worker")."""

    name: str
    kind: str
    env: Mapping[str, str]
    log_path: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    ready: bool = False  # answered its health check since it was last started
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.port is not None, "only servers have a URL"
        return f"http://{_LOCALHOST}:{self.port}"

    def args(self) -> list[str]:
        if self.kind == "server":
            return [
                BILLKEEP_SCRIPT, "serve", "--host", _LOCALHOST, "--port", str(self.port),
                "--workers", "1", "--log-level", "warning",
            ]  # fmt: skip
        return [BILLKEEP_SCRIPT, "worker"]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process (not waiting for it to be ready)."""
        assert not self.alive(), f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args(),
                env=dict(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill -9 reaches its children
            )
        self.starts += 1
        self.ready = False

    def wait_ready(self, timeout_ms: int = STARTUP_TIMEOUT_MS) -> bool:
        """Servers: until /healthz answers 200. Workers: running is ready."""
        if self.kind != "server":
            self.ready = self.alive()
            return self.ready
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    self.ready = True
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(_HEALTH_POLL_MS / 1000)
        return False

    def kill9(self) -> bool:
        """SIGKILL the whole process group, as a crash; True if something was killed."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        proc.wait(STOP_TIMEOUT_MS / 1000)
        self.kills += 1
        return True

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL if it does not go; reaps the process."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(STOP_TIMEOUT_MS / 1000)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT_MS / 1000)
        # uvicorn children of a server that died alone could survive in its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Supervisor:
    """The servers and workers of one run, all against one database."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, servers: int, workers: int) -> None:
        self.processes: list[ManagedProcess] = []
        for n in range(servers):
            self.processes.append(
                ManagedProcess(
                    f"server-{n}", "server", env, log_dir / f"server-{n}.log", port=free_port()
                )
            )
        for n in range(workers):
            self.processes.append(
                ManagedProcess(f"worker-{n}", "worker", env, log_dir / f"worker-{n}.log")
            )
        atexit.register(self.stop_all)

    @property
    def servers(self) -> list[ManagedProcess]:
        return [p for p in self.processes if p.kind == "server"]

    @property
    def workers(self) -> list[ManagedProcess]:
        return [p for p in self.processes if p.kind == "worker"]

    def server_urls(self) -> list[str]:
        return [p.url for p in self.servers]

    def start(self, processes: list[ManagedProcess]) -> None:
        for process in processes:
            with process.lock:
                if not process.alive():
                    process.spawn()
        for process in processes:
            if not process.wait_ready():
                raise RuntimeError(f"{process.name} did not start:\n{process.log_tail()}")

    def restart_dead(self) -> None:
        self.start([p for p in self.processes if not p.alive()])

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()
