"""Configuration of the HTTP API, from environment variables (documented in docs/api.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["DEFAULT_ENGINE_THREADS", "DEFAULT_MAX_BODY_BYTES", "MAX_PREFER_WAIT_S", "ApiSettings"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # the contract: bodies over 1 MiB get 413
MAX_PREFER_WAIT_S = 10  # the contract: `Prefer: wait=N` with N <= 10 seconds
DEFAULT_UNAVAILABLE_RETRY_AFTER_S = 2
# Engine calls run in worker threads. Bounded below the database pool (10 + 20 overflow on
# PostgreSQL) so that a request whose code path holds two connections at once cannot exhaust the
# pool and wait on itself; see docs/api.md.
DEFAULT_ENGINE_THREADS = 12


@dataclass(frozen=True)
class ApiSettings:
    """Named limits of the HTTP layer. The engine's own limits live in `EngineConfig`."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_prefer_wait_s: int = MAX_PREFER_WAIT_S
    # Retry-After sent with 503 database_unavailable.
    unavailable_retry_after_s: int = DEFAULT_UNAVAILABLE_RETRY_AFTER_S
    # JSON logs on standard output (structlog); off in tests that do not care.
    log_json: bool = True
    log_level: str = "INFO"
    engine_threads: int = DEFAULT_ENGINE_THREADS

    def __post_init__(self) -> None:
        assert self.max_body_bytes > 0
        assert 0 <= self.max_prefer_wait_s <= MAX_PREFER_WAIT_S
        assert self.unavailable_retry_after_s >= 1
        assert self.engine_threads >= 1

    @classmethod
    def from_env(cls) -> ApiSettings:
        env = os.environ
        return cls(
            max_body_bytes=int(env.get("BILLKEEP_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
            unavailable_retry_after_s=int(
                env.get("BILLKEEP_UNAVAILABLE_RETRY_AFTER_S", DEFAULT_UNAVAILABLE_RETRY_AFTER_S)
            ),
            log_json=env.get("BILLKEEP_LOG_FORMAT", "json") == "json",
            log_level=env.get("BILLKEEP_LOG_LEVEL", "INFO").upper(),
            engine_threads=int(env.get("BILLKEEP_API_THREADS", DEFAULT_ENGINE_THREADS)),
        )
