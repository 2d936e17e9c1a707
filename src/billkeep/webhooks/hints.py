"""What an event envelope says about where its facts belong, beyond the facts themselves: the
command that made the payment (metadata[billkeep_command]) and the commands of its refunds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from billkeep.domain.payment_state import StripeEventFacts

__all__ = ["COMMAND_METADATA_KEY", "EventHints", "hints_from_event", "with_fetched_object"]

COMMAND_METADATA_KEY = "billkeep_command"


@dataclass(frozen=True)
class EventHints:
    reference: str | None  # the payment intent (pi_...)
    charge_id: str | None  # the gateway's charge (ch_...), when the event names one
    command_ref: str | None  # the billkeep command that made the payment, if the event says
    refund_commands: Mapping[str, str] = field(default_factory=dict)
    # True once the gateway confirmed the payment carries no billkeep command: not ours.
    foreign: bool = False


def _command_of(obj: Any) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(COMMAND_METADATA_KEY)
    return value if isinstance(value, str) and value else None


def hints_from_event(event: Mapping[str, Any], facts: StripeEventFacts) -> EventHints:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    obj = obj if isinstance(obj, Mapping) else {}
    command_ref: str | None = None
    refund_commands: dict[str, str] = {}
    if facts.event_type.startswith("payment_intent.") or facts.event_type == "charge.refunded":
        command_ref = _command_of(obj)
    if facts.event_type.startswith("refund."):
        refund_command = _command_of(obj)
        if refund_command is not None and isinstance(obj.get("id"), str):
            refund_commands[obj["id"]] = refund_command
    listed = obj.get("refunds")
    if isinstance(listed, Mapping):
        for refund in listed.get("data") or []:
            refund_command = _command_of(refund)
            if refund_command is not None and isinstance(refund.get("id"), str):
                refund_commands[refund["id"]] = refund_command
    return EventHints(facts.reference, facts.charge_id, command_ref, refund_commands)


def with_fetched_object(hints: EventHints, intent: Mapping[str, Any] | None) -> EventHints:
    """Complete the hints with the payment intent fetched from the gateway (None: not found)."""
    if intent is None:
        return hints
    reference = intent.get("id") if isinstance(intent.get("id"), str) else hints.reference
    command_ref = _command_of(intent)
    return replace(
        hints,
        reference=reference,
        command_ref=command_ref or hints.command_ref,
        foreign=command_ref is None and hints.command_ref is None,
    )
