"""JSON shapes of resources, as the API contract defines them (used by responses and replays)."""

from __future__ import annotations

import json
from typing import Any

from billkeep.domain.clock import ms_to_rfc3339

__all__ = ["charge_view", "customer_view", "refund_view"]


def customer_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "customer",
        "email": row.email,
        "name": row.name,
        "external_id": row.external_id,
        "payment_method": row.payment_method,
        "metadata": json.loads(row.metadata),
        "created_at": ms_to_rfc3339(row.created_at_ms),
    }


def charge_view(row: Any) -> dict[str, Any]:
    failure = None
    if row.failure_code is not None:
        failure = {"code": row.failure_code, "message": row.failure_message}
    return {
        "id": row.id,
        "object": "charge",
        "customer_id": row.customer_id,
        "amount": row.amount_minor,
        "currency": row.currency,
        "status": row.status,
        "amount_refunded": row.amount_refunded_minor,
        "gateway": row.gateway,
        "gateway_reference": row.gateway_reference,
        "failure": failure,
        "description": row.description,
        "metadata": json.loads(row.metadata),
        "command_id": row.command_id,
        "created_at": ms_to_rfc3339(row.created_at_ms),
        "updated_at": ms_to_rfc3339(row.updated_at_ms),
    }


def refund_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "refund",
        "charge_id": row.charge_id,
        "amount": row.amount_minor,
        "currency": row.currency,
        "status": row.status,
        "reason": row.reason,
        "gateway_reference": row.gateway_reference,
        "command_id": row.command_id,
        "created_at": ms_to_rfc3339(row.created_at_ms),
    }
