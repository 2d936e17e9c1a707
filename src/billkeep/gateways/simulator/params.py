"""Typed requests: what each endpoint accepts, read out of a form, unknown parameters refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billkeep.gateways.simulator.errors import invalid_request
from billkeep.gateways.simulator.forms import Form, FormValue, ParamReader
from billkeep.gateways.simulator.limits import MAX_BULK_COUNT

__all__ = [
    "BulkCreate",
    "CustomerCreate",
    "DisputeCreate",
    "ListRequest",
    "PaymentIntentCreate",
    "RefundCreate",
    "RefundUpdate",
    "SearchRequest",
    "form_from_json",
    "parse_bulk_create",
    "parse_customer_create",
    "parse_dispute_create",
    "parse_list",
    "parse_payment_intent_create",
    "parse_refund_create",
    "parse_refund_update",
    "parse_search",
]


@dataclass(frozen=True, slots=True)
class CustomerCreate:
    email: str | None = None
    name: str | None = None
    description: str | None = None
    phone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PaymentIntentCreate:
    amount: int
    currency: str
    customer: str | None = None
    payment_method: str | None = None
    confirm: bool = False
    off_session: bool = False
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefundCreate:
    payment_intent: str | None = None
    charge: str | None = None
    amount: int | None = None  # None: everything not yet refunded
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefundUpdate:
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class ListRequest:
    limit: int = 10
    created_gte_s: int | None = None
    created_lt_s: int | None = None
    starting_after: str | None = None
    ending_before: str | None = None
    filters: tuple[tuple[str, str], ...] = ()  # (column, value) on the store's ref/status/type


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: str
    limit: int = 10
    page: str | None = None


@dataclass(frozen=True, slots=True)
class DisputeCreate:
    payment_intent: str | None = None
    charge: str | None = None
    amount: int | None = None
    reason: str = "fraudulent"


@dataclass(frozen=True, slots=True)
class BulkCreate:
    count: int
    amount: int = 1000
    currency: str = "usd"
    created_start_s: int | None = None
    spacing_s: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
_DISPUTE_REASONS = ("fraudulent", "duplicate", "product_not_received", "general")


def parse_customer_create(form: Form) -> CustomerCreate:
    reader = ParamReader(form)
    request = CustomerCreate(
        email=reader.string("email", max_chars=512),
        name=reader.string("name", max_chars=256),
        description=reader.string("description"),
        phone=reader.string("phone", max_chars=20),
        metadata=reader.metadata(),
    )
    reader.reject_unknown()
    return request


def parse_payment_intent_create(form: Form) -> PaymentIntentCreate:
    reader = ParamReader(form)
    amount = reader.amount()
    assert amount is not None
    request = PaymentIntentCreate(
        amount=amount,
        currency=reader.currency(),
        customer=reader.string("customer"),
        payment_method=reader.string("payment_method"),
        confirm=bool(reader.boolean("confirm")),
        off_session=bool(reader.boolean("off_session")),
        description=reader.string("description", max_chars=1000),
        metadata=reader.metadata(),
    )
    reader.reject_unknown()
    return request


def parse_refund_create(form: Form) -> RefundCreate:
    reader = ParamReader(form)
    request = RefundCreate(
        payment_intent=reader.string("payment_intent"),
        charge=reader.string("charge"),
        amount=reader.amount(required=False),
        reason=reader.string("reason"),
        metadata=reader.metadata(),
    )
    reader.reject_unknown()
    if (request.payment_intent is None) == (request.charge is None):
        raise invalid_request(
            "Exactly one of payment_intent or charge is required.", param="payment_intent"
        )
    if request.reason is not None and request.reason not in _REFUND_REASONS:
        raise invalid_request(f"Invalid reason: {request.reason}", param="reason")
    return request


def parse_refund_update(form: Form) -> RefundUpdate:
    reader = ParamReader(form)
    request = RefundUpdate(metadata=reader.metadata())
    reader.reject_unknown()
    return request


def parse_list(form: Form, *, filters: dict[str, str] | None = None) -> ListRequest:
    """Stripe list parameters; `filters` maps extra accepted parameters to store columns."""
    reader = ParamReader(form)
    created = reader.time_range("created")
    limit = reader.limit()
    starting_after = reader.string("starting_after")
    ending_before = reader.string("ending_before")
    chosen = []
    for param, column in (filters or {}).items():
        value = reader.string(param)
        if value is not None:
            chosen.append((column, value))
    reader.reject_unknown()
    if starting_after is not None and ending_before is not None:
        raise invalid_request(
            "You may only specify one of these parameters: starting_after, ending_before.",
            param="ending_before",
        )
    return ListRequest(
        limit=limit,
        created_gte_s=created.gte_s,
        created_lt_s=created.lt_s,
        starting_after=starting_after,
        ending_before=ending_before,
        filters=tuple(chosen),
    )


def parse_search(form: Form) -> SearchRequest:
    reader = ParamReader(form)
    request = SearchRequest(
        query=reader.required_string("query"), limit=reader.limit(), page=reader.string("page")
    )
    reader.reject_unknown()
    return request


def parse_dispute_create(form: Form) -> DisputeCreate:
    reader = ParamReader(form)
    request = DisputeCreate(
        payment_intent=reader.string("payment_intent"),
        charge=reader.string("charge"),
        amount=reader.amount(required=False),
        reason=reader.string("reason") or "fraudulent",
    )
    reader.reject_unknown()
    if (request.payment_intent is None) == (request.charge is None):
        raise invalid_request(
            "Exactly one of payment_intent or charge is required.", param="payment_intent"
        )
    if request.reason not in _DISPUTE_REASONS:
        raise invalid_request(f"Invalid reason: {request.reason}", param="reason")
    return request


def parse_bulk_create(form: Form) -> BulkCreate:
    reader = ParamReader(form)
    count = reader.integer("count", minimum=1, maximum=MAX_BULK_COUNT, required=True)
    assert count is not None
    amount = reader.amount(required=False)
    currency = reader.string("currency")
    request = BulkCreate(
        count=count,
        amount=1000 if amount is None else amount,
        currency="usd" if currency is None else currency.lower(),
        created_start_s=reader.integer("created_start_s", minimum=0, maximum=2**40),
        spacing_s=reader.integer("spacing_s", minimum=0, maximum=10**6) or 0,
        metadata=reader.metadata(),
    )
    reader.reject_unknown()
    return request


def _json_scalar(value: Any) -> FormValue:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return {str(k): _json_scalar(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_scalar(v) for v in value]
    if value is None:
        return ""
    if isinstance(value, float):
        raise invalid_request("Amounts and counts are integers; floats are refused")
    return str(value)


def form_from_json(body: Any) -> Form:
    """The control API takes JSON; read it through the same typed parsers as Stripe's forms."""
    if not isinstance(body, dict):
        raise invalid_request("Request body must be a JSON object")
    return {str(key): _json_scalar(value) for key, value in body.items()}
