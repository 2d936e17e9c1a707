"""What logical clients asked for and what they were told: the auditor's view from outside."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from billkeep.domain.errors import BillkeepError

if TYPE_CHECKING:
    from billkeep.domain.clock import Clock
    from billkeep.engine.service import Billkeep

__all__ = ["ClientHistory", "Intent", "Observation", "observe_call"]


@dataclass(frozen=True)
class Observation:
    at_ms: int
    actor: str
    kind: str  # "result" or the error code the client got (idempotency_key_in_use, ...)
    status: int
    body_text: str | None = None
    final: bool = False
    command_id: str | None = None
    replayed: bool = False

    def body(self) -> Any:
        return None if self.body_text is None else json.loads(self.body_text)


@dataclass
class Intent:
    """One client intent: (tenant, operation, idempotency key) with one request."""

    number: int
    tenant_id: str
    operation: str
    key: str
    request: dict[str, Any]
    # A conflicting intent reuses another intent's key with a different request: every answer
    # must be a refusal while that key is retained.
    conflicts_with: int | None = None
    observations: list[Observation] = field(default_factory=list)

    def first_final(self) -> Observation | None:
        return next((o for o in self.observations if o.kind == "result" and o.final), None)

    @property
    def settled(self) -> bool:
        return self.conflicts_with is not None or self.first_final() is not None


@dataclass
class ClientHistory:
    intents: list[Intent] = field(default_factory=list)
    # Cross-tenant probes that got an answer they must not get (I10), found by the workload.
    isolation_breaches: list[str] = field(default_factory=list)

    def add(self, intent: Intent) -> Intent:
        self.intents.append(intent)
        return intent

    def by_number(self, number: int) -> Intent:
        return self.intents[number]


def observe_call(bk: Billkeep, clock: Clock, intent: Intent, actor: str) -> Observation:
    """Send `intent` as `actor` and return what the client was told (an answer or a refusal)."""
    try:
        result = bk.execute(
            intent.tenant_id,
            intent.operation,
            intent.request,
            idempotency_key=intent.key,
            actor=actor,
        )
    except BillkeepError as exc:
        return Observation(
            clock.now_ms(), actor, exc.code, exc.status, command_id=getattr(exc, "command_id", None)
        )
    return Observation(
        clock.now_ms(),
        actor,
        "result",
        result.status,
        result.body_text,
        result.final,
        result.command_id,
        result.replayed,
    )
