"""Domain errors with stable machine-readable codes.

Each error knows the HTTP status the API contract gives it, so every interface (library, HTTP, CLI)
reports the same code for the same condition.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BillkeepError",
    "ChargeNotRefundable",
    "Conflict",
    "DatabaseUnavailable",
    "FieldError",
    "IdempotencyKeyInUse",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyMissing",
    "IdempotencyKeyReused",
    "LeaseLost",
    "LedgerEntryConflict",
    "NotFound",
    "RefundExceedsCharge",
    "UnbalancedEntry",
    "ValidationFailed",
]


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class BillkeepError(Exception):
    """Base of every error billkeep reports to a caller."""

    code: str = "internal_error"
    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str = "", errors: list[FieldError] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors: list[FieldError] = list(errors or [])


class ValidationFailed(BillkeepError):
    """The request itself is invalid. Nothing was recorded."""

    code = "validation_error"
    status = 422
    title = "Request validation failed"

    def __init__(self, errors: list[FieldError], detail: str = "") -> None:
        assert errors, "a validation failure names at least one field"
        summary = detail or "; ".join(f"{e.field}: {e.message}" for e in errors)
        super().__init__(summary, errors)

    @classmethod
    def single(cls, field: str, message: str) -> ValidationFailed:
        return cls([FieldError(field, message)])


class IdempotencyKeyMissing(BillkeepError):
    code = "idempotency_key_missing"
    status = 400
    title = "Idempotency-Key header is required"


class IdempotencyKeyInvalid(BillkeepError):
    code = "idempotency_key_invalid"
    status = 400
    title = "Idempotency-Key must be 1..255 visible ASCII characters"


class IdempotencyKeyReused(BillkeepError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency-Key was used with a different request"


class IdempotencyKeyInUse(BillkeepError):
    code = "idempotency_key_in_use"
    status = 409
    title = "A request with this Idempotency-Key is still being processed"

    def __init__(self, detail: str = "", retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class NotFound(BillkeepError):
    code = "resource_missing"
    status = 404
    title = "No such resource"


class Conflict(BillkeepError):
    code = "conflict"
    status = 409
    title = "Conflict"


class RefundExceedsCharge(BillkeepError):
    code = "refund_exceeds_charge"
    status = 422
    title = "Refund exceeds what is left to refund"


class ChargeNotRefundable(BillkeepError):
    code = "charge_not_refundable"
    status = 409
    title = "Charge cannot be refunded"


class UnbalancedEntry(BillkeepError):
    code = "unbalanced_entry"
    status = 422
    title = "Journal entry does not balance per currency"


class LedgerEntryConflict(BillkeepError):
    """Same entry_key with other content: names the differing field."""

    code = "entry_key_reused"
    status = 409
    title = "Entry key was used for a different journal entry"


class LeaseLost(BillkeepError):
    """A worker's fencing token is stale: another worker owns the command now."""

    code = "lease_lost"
    status = 409
    title = "Command lease was taken over"


class DatabaseUnavailable(BillkeepError):
    code = "database_unavailable"
    status = 503
    title = "Database unavailable"
