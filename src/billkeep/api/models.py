"""Pydantic models of request and response bodies, for the OpenAPI document.

Requests are NOT parsed with these models: the engine validates the raw JSON strictly (no
coercion of "100" or 1.0 into an amount). The models describe the same rules for clients, and
the response models describe exactly what the engine's views return.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from billkeep.domain.money import MAX_AMOUNT_MINOR
from billkeep.engine.operations.validation import (
    MAX_DESCRIPTION_LENGTH,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_REFERENCE_LENGTH,
)

__all__ = [
    "RFC3339_PATTERN",
    "Account",
    "AccountBalance",
    "AccountList",
    "Charge",
    "ChargeCreate",
    "ChargeFailure",
    "ChargeList",
    "Command",
    "CommandHistoryItem",
    "CommandList",
    "CommandStoredResponse",
    "Customer",
    "CustomerCreate",
    "CustomerList",
    "Health",
    "JournalEntry",
    "JournalEntryList",
    "Posting",
    "Problem",
    "ProblemFieldError",
    "Refund",
    "RefundCreate",
    "TrialBalance",
    "TrialBalanceLine",
]

Amount = Field(ge=1, le=MAX_AMOUNT_MINOR, strict=True, description="Integer minor units.")
Currency = Field(pattern=r"^[a-z]{3}$", description="Lowercase ISO 4217 code, e.g. `usd`.")
Reference = Field(min_length=1, max_length=MAX_REFERENCE_LENGTH)
Metadata = Field(default=None, max_length=MAX_METADATA_PAIRS, description="Up to 50 string pairs.")
Timestamp = Field(description="RFC 3339, UTC.")
# What request times must look like: RFC 3339 with an explicit offset.
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
MetadataMap = dict[
    Annotated[str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_LENGTH)],
    Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE_LENGTH)],
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- problems ------------------------------------------------------------------------------------
class ProblemFieldError(_Response):
    field: str
    message: str


class Problem(_Response):
    """RFC 9457 problem document; `code` is stable and machine-readable."""

    type: str = Field(pattern=r"^urn:billkeep:problem:")
    title: str
    status: int
    detail: str
    code: str
    errors: list[ProblemFieldError] | None = None


# --- customers -----------------------------------------------------------------------------------
class CustomerCreate(_Request):
    email: str | None = Field(default=None, max_length=320, pattern="@")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    external_id: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)
    payment_method: str | None = Field(
        default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH, examples=["pm_card_visa"]
    )
    metadata: MetadataMap | None = Metadata


class Customer(_Response):
    id: str
    object: Literal["customer"]
    email: str | None
    name: str | None
    external_id: str | None
    payment_method: str | None
    metadata: dict[str, str]
    created_at: str = Timestamp


class _List(_Response):
    object: Literal["list"]
    has_more: bool
    next_cursor: str | None


class CustomerList(_List):
    data: list[Customer]


# --- charges -------------------------------------------------------------------------------------
class ChargeCreate(_Request):
    customer_id: str = Reference
    amount: int = Amount
    currency: str = Currency
    description: str | None = Field(default=None, min_length=1, max_length=MAX_DESCRIPTION_LENGTH)
    metadata: MetadataMap | None = Metadata
    payment_method: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)


class ChargeFailure(_Response):
    code: str
    message: str | None


class Charge(_Response):
    id: str
    object: Literal["charge"]
    customer_id: str
    amount: int
    currency: str
    status: Literal["pending", "succeeded", "failed"]
    amount_refunded: int
    gateway: str
    gateway_reference: str | None
    failure: ChargeFailure | None
    description: str | None
    metadata: dict[str, str]
    command_id: str
    created_at: str = Timestamp
    updated_at: str = Timestamp


class ChargeList(_List):
    data: list[Charge]


# --- refunds -------------------------------------------------------------------------------------
class RefundCreate(_Request):
    charge_id: str = Reference
    amount: int | None = Field(
        default=None, ge=1, le=MAX_AMOUNT_MINOR, description="Defaults to what is left."
    )
    reason: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)


class Refund(_Response):
    id: str
    object: Literal["refund"]
    charge_id: str
    amount: int
    currency: str
    status: str
    reason: str | None
    gateway_reference: str | None
    command_id: str
    created_at: str = Timestamp


# --- commands ------------------------------------------------------------------------------------
class CommandStoredResponse(_Response):
    status: int
    body: Any


class CommandHistoryItem(_Response):
    seq: int
    from_state: str | None
    state: str
    recovery_point: str | None
    actor: str | None
    at: str = Timestamp
    detail: str | None


class Command(_Response):
    id: str
    object: Literal["command"]
    operation: str
    idempotency_key: str | None
    business_key: str | None
    state: Literal["created", "running", "awaiting_outcome", "succeeded", "failed", "rejected"]
    recovery_point: str | None
    attempts: int
    request: dict[str, Any]
    response: CommandStoredResponse | None
    resource_id: str | None
    key_expires_at: str | None
    history: list[CommandHistoryItem] = Field(description="Empty in lists; full on GET by id.")
    created_at: str = Timestamp
    completed_at: str | None


class CommandList(_List):
    data: list[Command]


# --- money ledger --------------------------------------------------------------------------------
class AccountBalance(_Response):
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int


class Account(_Response):
    id: str
    object: Literal["account"]
    code: str
    type: str
    currency: str
    customer_id: str | None
    balance: AccountBalance


class AccountList(_List):
    data: list[Account]


class Posting(_Response):
    account_id: str
    direction: Literal["debit", "credit"]
    amount: int
    currency: str


class JournalEntry(_Response):
    id: str
    object: Literal["journal_entry"]
    entry_key: str
    state: Literal["pending", "posted", "voided"]
    description: str
    resource_id: str | None
    postings: list[Posting]
    reverses: str | None
    created_at: str = Timestamp


class JournalEntryList(_List):
    data: list[JournalEntry]


class TrialBalanceLine(_Response):
    currency: str
    debits: int
    credits: int


class TrialBalance(_Response):
    object: Literal["trial_balance"]
    currencies: list[TrialBalanceLine]


# --- operations ----------------------------------------------------------------------------------
class Health(_Response):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
