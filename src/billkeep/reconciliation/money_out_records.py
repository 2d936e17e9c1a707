"""The records of money leaving at the gateway (refunds and disputes) that a reconciliation run
matches, and the heal it proposes for them (see reconciliation.money_out for the classification).

Match key: the business fact the ledger names the money by, `refund:{re}` / `dispute:{dp}` (the
ledger entry's key), compared as Python `str` like the payments' keys (byte order, `COLLATE "C"`
on PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

__all__ = [
    "GatewayReversal",
    "LearnMoneyOut",
    "LedgerRefund",
    "ReversalKind",
    "ReversalStatus",
    "reversal_match_key",
]


class ReversalKind(StrEnum):
    REFUND = "refund"
    DISPUTE = "dispute"


class ReversalStatus(StrEnum):
    """Where the money stands: gone (succeeded), on its way (pending), or never left (failed)."""

    SUCCEEDED = "succeeded"
    PENDING = "pending"
    FAILED = "failed"


def reversal_match_key(kind: ReversalKind, reference: str) -> str:
    return f"{kind.value}:{reference}"


@dataclass(frozen=True, slots=True)
class GatewayReversal:
    """A refund or dispute at the gateway, with what the ledger already holds for it (joined when
    the run reads the staged page back: the charge it belongs to, the posted entry's amount)."""

    kind: ReversalKind
    reference: str  # re_... / dp_...
    payment_reference: str | None  # the payment intent the money left
    command_ref: str | None  # metadata[billkeep_command] of a refund billkeep made
    amount_minor: int
    currency: str
    status: ReversalStatus
    created_ms: int
    charge_id: str | None = None  # the local charge of the payment, None when billkeep has none
    charge_currency: str | None = None
    posted_minor: int | None = None  # the amount of the `kind:reference` entry; None: not posted
    refund_in_flight: bool = False  # a billkeep refund of the charge awaits its gateway answer

    @property
    def match_key(self) -> str:
        return reversal_match_key(self.kind, self.reference)


@dataclass(frozen=True, slots=True)
class LedgerRefund:
    """A refund billkeep made and recorded as done at the gateway (`refunds`, succeeded)."""

    resource_id: str  # the local charge
    refund_id: str
    gateway_reference: str
    amount_minor: int
    currency: str
    created_ms: int

    @property
    def match_key(self) -> str:
        return reversal_match_key(ReversalKind.REFUND, self.gateway_reference)


@dataclass(frozen=True, slots=True)
class LearnMoneyOut:
    """Learn a refund or dispute the gateway made, as a webhook for it would (payment_state facts
    joined, then webhooks.local.sync_local), so every path posts the fact once."""

    action: ClassVar[str] = "learn_money_out"
    resource_id: str
    kind: ReversalKind
    reference: str
    payment_reference: str
    amount_minor: int
    command_ref: str | None = None  # metadata[billkeep_command] of the refund, when billkeep's
