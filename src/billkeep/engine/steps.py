"""The vocabulary of command execution: steps, the transitions they return, and their context.

A command runs as a sequence of atomic phases (Brandur Leach's recovery points). A `LocalStep` is
one database transaction that also moves the recovery point; a `ForeignStep` calls a foreign
system (a gateway) outside any transaction, then records what it learned in one transaction. The
foreign call carries an idempotency key derived from the command, so re-running a ForeignStep after
a crash can never make a second effect.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from billkeep.domain.clock import Clock
from billkeep.domain.commands import CommandState
from billkeep.gateways.protocol import GatewayDirectory
from billkeep.storage.database import Database

__all__ = [
    "Advance",
    "EngineConfig",
    "EngineServices",
    "Finish",
    "ForeignStep",
    "LocalStep",
    "Operation",
    "Step",
    "StepContext",
    "Suspend",
    "Transition",
    "parse_duration_ms",
]

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class EngineConfig:
    """Every limit of the engine, named, with units."""

    idempotency_ttl_ms: int = 72 * HOUR_MS
    lease_ms: int = 30_000
    max_wait_ms: int = 10_000
    wait_poll_ms: int = 50
    # How to resolve unknown outcomes: the delays before each resolution try (1 min, 5 min, 1 h,
    # then daily), and the total time after which a command is left for an operator.
    resolve_backoff_ms: tuple[int, ...] = (60_000, 300_000, HOUR_MS, DAY_MS)
    resolve_give_up_ms: int = 7 * DAY_MS
    # An unexpected error leaves the command non-final; the worker retries it after this.
    error_retry_ms: int = 5_000
    # Safety margin under the gateway's key retention: past it, look the payment up instead.
    gateway_key_margin_ms: int = HOUR_MS
    worker_batch_size: int = 50
    sweeper_batch_size: int = 500

    def __post_init__(self) -> None:
        assert self.lease_ms >= 1_000, "a lease shorter than a second cannot cover a gateway call"
        assert 0 < self.max_wait_ms <= 10_000, "Prefer: wait is capped at 10 s by the API contract"
        assert self.resolve_backoff_ms and all(d > 0 for d in self.resolve_backoff_ms)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineConfig:
        """Read overrides: BILLKEEP_IDEMPOTENCY_TTL (e.g. 72h), BILLKEEP_LEASE (30s),
        BILLKEEP_RESOLVE_BACKOFF (1m,5m,1h,1d), BILLKEEP_RESOLVE_GIVE_UP (7d),
        BILLKEEP_ERROR_RETRY (5s). Durations: an integer with ms, s, m, h or d."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for variable, field_name in _DURATION_SETTINGS.items():
            if env.get(variable):
                values[field_name] = parse_duration_ms(env[variable], variable)
        if env.get("BILLKEEP_RESOLVE_BACKOFF"):
            values["resolve_backoff_ms"] = tuple(
                parse_duration_ms(part, "BILLKEEP_RESOLVE_BACKOFF")
                for part in env["BILLKEEP_RESOLVE_BACKOFF"].split(",")
            )
        return cls(**values)

    def resolve_delay_ms(self, tries: int) -> int:
        schedule = self.resolve_backoff_ms
        return schedule[min(tries, len(schedule) - 1)]


_DURATION_SETTINGS = {
    "BILLKEEP_IDEMPOTENCY_TTL": "idempotency_ttl_ms",
    "BILLKEEP_LEASE": "lease_ms",
    "BILLKEEP_RESOLVE_GIVE_UP": "resolve_give_up_ms",
    "BILLKEEP_ERROR_RETRY": "error_retry_ms",
}
_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": HOUR_MS, "d": DAY_MS}
_DURATION_PATTERN = re.compile(r"^\s*(\d{1,12})\s*(ms|s|m|h|d)\s*$")


def parse_duration_ms(text: str, name: str = "duration") -> int:
    """`72h` -> 259200000. Refuses anything but a whole number with a unit."""
    match = _DURATION_PATTERN.match(text)
    if match is None:
        raise ValueError(f"{name}: {text!r} is not a duration like 500ms, 30s, 5m, 72h or 7d")
    return int(match.group(1)) * _DURATION_UNITS_MS[match.group(2)]


@dataclass
class EngineServices:
    db: Database
    clock: Clock
    gateways: GatewayDirectory
    config: EngineConfig = field(default_factory=EngineConfig)


@dataclass
class StepContext:
    services: EngineServices
    tenant_id: str
    command_id: str
    operation: str
    request: Mapping[str, Any]
    fencing_token: int
    actor: str
    recovery_point: str
    state: CommandState
    resource_id: str | None
    attempts: int

    def now_ms(self) -> int:
        return self.services.clock.now_ms()


@dataclass(frozen=True)
class Advance:
    """Move to the next recovery point and keep going."""

    point: str
    detail: str | None = None
    resource_id: str | None = None


@dataclass(frozen=True)
class Finish:
    """A final outcome: stored, replayed for every retry, key retained for the TTL."""

    state: CommandState
    status: int
    body: Mapping[str, Any]
    resource_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Suspend:
    """Stop for now with a non-final answer (e.g. 202); the worker or a retry resumes at `point`."""

    state: CommandState
    point: str
    status: int
    body: Mapping[str, Any]
    retry_after_ms: int
    detail: str | None = None
    resource_id: str | None = None


Transition = Advance | Finish | Suspend


@dataclass(frozen=True)
class LocalStep:
    run: Callable[[StepContext, Connection], Transition]


@dataclass(frozen=True)
class ForeignStep:
    call: Callable[[StepContext], Any]
    record: Callable[[StepContext, Connection, Any], Transition]


Step = LocalStep | ForeignStep


class Operation(Protocol):
    """One kind of command (charge.create, refund.create, ...)."""

    name: str

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The canonical request, or ValidationFailed. Pure: nothing is recorded on failure."""
        ...

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        """Checks needing the database (referenced objects exist), run in the recording transaction
        before anything is written; raising rolls it back, so nothing is recorded."""
        ...

    def steps(self) -> Mapping[str, Step]:
        """Recovery point -> the step that runs from it. The first point is `started`."""
        ...
