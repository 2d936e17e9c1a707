"""Pydantic models of reconciliation and webhook bodies, for the OpenAPI document.

Response models mirror `reconciliation/views.py` (`run_view`, `break_view`, the summary of
`reconciliation/runner.py empty_summary`) and `webhooks/queries.py event_view` field for field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from billkeep.api.models import RFC3339_PATTERN, Timestamp, _List, _Request, _Response
from billkeep.storage.tables.reconciliation import MAX_EVENT_TYPE_LENGTH

__all__ = [
    "BREAK_TYPES",
    "EVENT_OUTCOMES",
    "Reconciliation",
    "ReconciliationBreak",
    "ReconciliationBreakCounts",
    "ReconciliationBreakList",
    "ReconciliationCreate",
    "ReconciliationSummary",
    "WebhookAck",
    "WebhookEvent",
    "WebhookEventList",
    "WebhookEventPayload",
    "WebhookEventSummary",
]

# reconciliation/matching.py BREAK_KINDS and webhooks/inbox.py EventOutcome (a test keeps them
# equal).
BREAK_TYPES = Literal[
    "amount_mismatch",
    "currency_mismatch",
    "duplicate",
    "missing_at_gateway",
    "missing_in_ledger",
    "pending_timing",
    "status_mismatch",
]
_MAX_WEBHOOK_EVENT_ID_LENGTH = 255  # webhooks/inbox.py parse_event
EVENT_OUTCOMES = Literal[
    "received", "applied", "duplicate", "stale", "parked", "ignored", "conflict", "failed"
]


# --- reconciliation ------------------------------------------------------------------------------
class ReconciliationCreate(_Request):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    gateway_id: str | None = Field(
        default=None, min_length=1, description="Default: the tenant's default gateway."
    )
    from_: str = Field(
        alias="from",
        pattern=RFC3339_PATTERN,
        description="RFC 3339, 1970..9999; the window's start (inclusive).",
    )
    to: str = Field(
        pattern=RFC3339_PATTERN,
        description="RFC 3339, after `from`; windows over 93 days must be split.",
    )


class ReconciliationBreakCounts(_Response):
    amount_mismatch: int
    currency_mismatch: int
    duplicate: int
    missing_at_gateway: int
    missing_in_ledger: int
    pending_timing: int
    status_mismatch: int


class ReconciliationSummary(_Response):
    gateway_records: int
    ledger_records: int
    matched: int
    healed: int
    breaks: ReconciliationBreakCounts


class Reconciliation(_Response):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str
    object: Literal["reconciliation"]
    status: Literal["running", "completed"]
    gateway_id: str
    from_: str = Field(alias="from", description="RFC 3339, UTC.")
    to: str = Timestamp
    grace_period_ms: int
    summary: ReconciliationSummary
    created_at: str = Timestamp
    completed_at: str | None


class ReconciliationBreak(_Response):
    id: str
    object: Literal["reconciliation_break"]
    reconciliation_id: str
    type: BREAK_TYPES
    match_key: str
    gateway_reference: str | None
    resource_id: str | None
    expected: dict[str, Any] = Field(description="What the ledger says (evidence).")
    actual: dict[str, Any] = Field(description="What the gateway says (evidence).")
    healed: bool
    resolution: str | None


class ReconciliationBreakList(_List):
    data: list[ReconciliationBreak]


# --- webhooks ------------------------------------------------------------------------------------
class WebhookEventPayload(_Response):
    """The gateway's event (Stripe's envelope), signed with `Stripe-Signature: t=...,v1=...`
    over the raw bytes; billkeep reads its `id` and `type` and keeps the rest as sent."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=_MAX_WEBHOOK_EVENT_ID_LENGTH)
    type: str = Field(min_length=1, max_length=MAX_EVENT_TYPE_LENGTH)


class WebhookAck(_Response):
    """The event is stored (or was already): processing runs after the answer."""

    received: Literal[True]
    duplicate: bool


class WebhookEventSummary(_Response):
    id: str
    object: Literal["webhook_event"]
    gateway_id: str
    event_id: str
    type: str
    reference: str | None
    outcome: EVENT_OUTCOMES
    reason: str | None
    attempts: int
    received_at: str = Timestamp
    processed_at: str | None
    next_attempt_at: str | None


class WebhookEvent(WebhookEventSummary):
    """One inbox event with the payload as the gateway sent it."""

    payload: dict[str, Any]


class WebhookEventList(_List):
    data: list[WebhookEventSummary]
