"""Receiving a webhook: verify the signature on the raw body, then store the event in the inbox
in one transaction, deduplicated by (tenant, gateway, event id). Nothing is stored for a request
that fails verification; nothing is acknowledged before it is stored (I11)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.ids import new_id
from billkeep.gateways.signing import verify_header
from billkeep.storage.database import Database, insert_ignoring_conflicts
from billkeep.storage.tables.reconciliation import MAX_EVENT_TYPE_LENGTH, webhook_events
from billkeep.webhooks.endpoints import GatewayEndpoint
from billkeep.webhooks.limits import MAX_WEBHOOK_BODY_BYTES, SIGNATURE_TOLERANCE_S

__all__ = [
    "EVENT_ID_PREFIX",
    "PENDING_OUTCOMES",
    "EventOutcome",
    "Received",
    "WebhookPayloadInvalid",
    "WebhookTooLarge",
    "parse_event",
    "receive",
    "store_event",
]

EVENT_ID_PREFIX = "wh"
_MAX_EVENT_ID_LENGTH = 255


class EventOutcome(StrEnum):
    RECEIVED = "received"  # stored, not processed yet
    APPLIED = "applied"  # changed the local payment
    DUPLICATE = "duplicate"  # told nothing new
    STALE = "stale"  # older than what is known (would move backward): recorded, changed nothing
    PARKED = "parked"  # about an object billkeep does not know yet: retried later
    IGNORED = "ignored"  # an event type or object billkeep does not track
    CONFLICT = "conflict"  # contradicts what is known (e.g. another amount): for a human
    FAILED = "failed"  # could not be processed; `reason` says why


PENDING_OUTCOMES = (EventOutcome.RECEIVED, EventOutcome.PARKED)


class WebhookPayloadInvalid(ValueError):
    code = "webhook_payload_invalid"


class WebhookTooLarge(ValueError):
    code = "payload_too_large"


@dataclass(frozen=True, slots=True)
class Received:
    id: str
    tenant_id: str
    event_id: str
    duplicate: bool


def parse_event(body: bytes) -> dict[str, Any]:
    """The event envelope, checked for what the inbox needs (an id and a type)."""
    try:
        # Decoded as UTF-8 first: json.loads(bytes) would also accept UTF-16/32, which the inbox
        # (it stores the body as UTF-8 text) could then not store. Deep nesting is refused, not
        # a RecursionError.
        event = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WebhookPayloadInvalid(f"body is not UTF-8 JSON: {exc}") from None
    if not isinstance(event, dict):
        raise WebhookPayloadInvalid("event must be a JSON object")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= _MAX_EVENT_ID_LENGTH:
        raise WebhookPayloadInvalid("event.id must be a non-empty string")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= MAX_EVENT_TYPE_LENGTH:
        raise WebhookPayloadInvalid("event.type must be a non-empty string")
    return event


def receive(
    db: Database,
    endpoint: GatewayEndpoint,
    body: bytes,
    signature_header: str,
    now_ms: int,
    *,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
    max_body_bytes: int = MAX_WEBHOOK_BODY_BYTES,
) -> Received:
    """Verify, parse and store. Raises SignatureInvalid, TimestampOutOfTolerance, WebhookTooLarge
    or WebhookPayloadInvalid, in which case nothing was stored."""
    if len(body) > max_body_bytes:
        raise WebhookTooLarge(f"webhook body over {max_body_bytes} bytes")
    signed_at_s = verify_header(
        body, signature_header, endpoint.secrets, now_ms // 1000, tolerance_s
    )
    event = parse_event(body)
    return db.run_write(
        lambda conn: store_event(conn, endpoint, event, body, signed_at_s * 1000, now_ms)
    )


def store_event(
    conn: Connection,
    endpoint: GatewayEndpoint,
    event: dict[str, Any],
    body: bytes,
    signed_at_ms: int,
    now_ms: int,
) -> Received:
    """Insert unless (tenant, gateway, event id) is already stored; report which happened."""
    row_id = new_id(EVENT_ID_PREFIX, now_ms)
    insert = insert_ignoring_conflicts(conn.dialect.name, webhook_events).values(
        tenant_id=endpoint.tenant_id,
        id=row_id,
        gateway_id=endpoint.gateway_id,
        event_id=event["id"],
        event_type=event["type"],
        payload=body.decode("utf-8"),
        reference=None,
        outcome=EventOutcome.RECEIVED.value,
        reason=None,
        attempts=0,
        signed_at_ms=signed_at_ms,
        received_at_ms=now_ms,
        next_attempt_at_ms=now_ms,
        parked_at_ms=None,
        processed_at_ms=None,
    )
    # RETURNING rather than rowcount: the driver's rowcount for ON CONFLICT DO NOTHING varies.
    inserted = conn.execute(insert.returning(webhook_events.c.id)).first() is not None
    if inserted:
        return Received(row_id, endpoint.tenant_id, event["id"], duplicate=False)
    existing = conn.execute(
        sa.select(webhook_events.c.id).where(
            webhook_events.c.tenant_id == endpoint.tenant_id,
            webhook_events.c.gateway_id == endpoint.gateway_id,
            webhook_events.c.event_id == event["id"],
        )
    ).scalar_one()
    return Received(str(existing), endpoint.tenant_id, event["id"], duplicate=True)
