"""Pydantic models of the billing bodies (metrics, plans, subscriptions, usage events, billing
runs, invoices), for the OpenAPI document.

As in `models.py`: requests are validated by the engine (`domain/metrics.py`, `domain/pricing.py`,
`domain/usage.py`, `billing/subscriptions.py`, `billing/runs.py`), these models describe the same
rules; response models mirror `billing/views.py`, `billing/invoicing.py upcoming_invoice` and
`billing/usage_ingest.py IngestResult.as_dict` field for field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from billkeep.api.models import (
    RFC3339_PATTERN,
    Amount,
    Currency,
    Reference,
    Timestamp,
    _List,
    _Request,
    _Response,
)
from billkeep.domain.metrics import (
    MAX_METRIC_NAME_LENGTH,
    METRIC_CODE_MAX_LENGTH,
    PROPERTY_NAME_MAX_LENGTH,
)
from billkeep.domain.money import MAX_AMOUNT_MINOR
from billkeep.domain.periods import MAX_INTERVAL_COUNT, MAX_TRIAL_DAYS
from billkeep.domain.pricing import (
    MAX_DESCRIPTION_LENGTH,
    MAX_PACKAGE_SIZE,
    MAX_PLAN_NAME_LENGTH,
    MAX_PRICES_PER_PLAN,
    MAX_QUANTITY,
    MAX_TIERS,
    PLAN_CODE_MAX_LENGTH,
)
from billkeep.domain.usage import (
    MAX_EVENT_ID_LENGTH,
    MAX_EVENTS_PER_BATCH,
    MAX_PROPERTIES,
    MAX_SUBJECT_ID_LENGTH,
)

__all__ = [
    "AGGREGATIONS",
    "INVOICE_STATUSES",
    "BillingRun",
    "BillingRunCreate",
    "FlatPrice",
    "GraduatedPrice",
    "Invoice",
    "InvoiceAttempt",
    "InvoiceLine",
    "InvoiceList",
    "Metric",
    "MetricCreate",
    "MetricList",
    "PackagePrice",
    "PerUnitPrice",
    "Plan",
    "PlanCreate",
    "PlanList",
    "Subscription",
    "SubscriptionCancel",
    "SubscriptionCreate",
    "SubscriptionList",
    "Tier",
    "UpcomingInvoice",
    "UpcomingInvoiceLine",
    "UsageEventIn",
    "UsageEventsCreate",
    "UsageIngestion",
    "UsageRejection",
    "VolumePrice",
]

AGGREGATIONS = Literal["sum", "count", "max", "unique_count"]
INVOICE_STATUSES = Literal["open", "paid", "uncollectible", "void"]
# Codes appear in URLs, logs and invoice lines: the engine's conservative alphabet.
_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
_PROPERTY = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$"
_NON_BLANK = r"\S"
_VISIBLE_ASCII = r"^[\x21-\x7E]+$"
MetricCode = Annotated[str, Field(min_length=1, max_length=METRIC_CODE_MAX_LENGTH, pattern=_CODE)]
TierAmount = Annotated[
    int,
    Field(ge=0, le=MAX_AMOUNT_MINOR, strict=True, description="Integer minor units; 0 allowed."),
]
PriceDescription = Annotated[
    str | None, Field(max_length=MAX_DESCRIPTION_LENGTH, pattern=_NON_BLANK)
]


# --- metrics -------------------------------------------------------------------------------------
class MetricCreate(_Request):
    code: MetricCode
    name: str = Field(max_length=MAX_METRIC_NAME_LENGTH, pattern=_NON_BLANK)
    aggregation: AGGREGATIONS
    property: str | None = Field(
        default=None,
        min_length=1,
        max_length=PROPERTY_NAME_MAX_LENGTH,
        pattern=_PROPERTY,
        description="The event property aggregated: required for sum/max/unique_count, absent "
        "for count.",
    )


class Metric(_Response):
    id: str
    object: Literal["metric"]
    code: str
    name: str
    aggregation: AGGREGATIONS
    property: str | None
    created_at: str = Timestamp


class MetricList(_List):
    data: list[Metric]


# --- plans ---------------------------------------------------------------------------------------
class Tier(_Request):
    up_to: int | None = Field(
        ge=1, le=MAX_QUANTITY, strict=True, description="Inclusive; null in the last tier only."
    )
    unit_amount: TierAmount
    flat_amount: TierAmount = Field(default=0, description="Absent: no flat fee.")


Tiers = Annotated[list[Tier], Field(min_length=1, max_length=MAX_TIERS)]


class FlatPrice(_Request):
    type: Literal["flat"]
    description: PriceDescription = None
    amount: int = Amount


class PerUnitPrice(_Request):
    type: Literal["per_unit"]
    description: PriceDescription = None
    metric: MetricCode
    unit_amount: TierAmount


class GraduatedPrice(_Request):
    type: Literal["graduated"]
    description: PriceDescription = None
    metric: MetricCode
    tiers: Tiers


class VolumePrice(_Request):
    type: Literal["volume"]
    description: PriceDescription = None
    metric: MetricCode
    tiers: Tiers


class PackagePrice(_Request):
    type: Literal["package"]
    description: PriceDescription = None
    metric: MetricCode
    package_size: int = Field(ge=1, le=MAX_PACKAGE_SIZE, strict=True)
    package_amount: int = Amount


Price = Annotated[
    FlatPrice | PerUnitPrice | GraduatedPrice | VolumePrice | PackagePrice,
    Field(discriminator="type"),
]


class PlanCreate(_Request):
    code: str = Field(min_length=1, max_length=PLAN_CODE_MAX_LENGTH, pattern=_CODE)
    name: str = Field(max_length=MAX_PLAN_NAME_LENGTH, pattern=_NON_BLANK)
    currency: str = Currency
    interval: Literal["month", "year"]
    interval_count: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_COUNT, strict=True)
    trial_days: int | None = Field(default=None, ge=0, le=MAX_TRIAL_DAYS, strict=True)
    prices: list[Price] = Field(
        min_length=1, max_length=MAX_PRICES_PER_PLAN, description="Metrics named must exist."
    )


class Plan(_Response):
    """`prices` are the prices as created (plans are immutable)."""

    id: str
    object: Literal["plan"]
    code: str
    name: str
    currency: str
    interval: Literal["month", "year"]
    interval_count: int
    trial_days: int
    prices: list[Price]
    created_at: str = Timestamp


class PlanList(_List):
    data: list[Plan]


# --- subscriptions -------------------------------------------------------------------------------
class SubscriptionCreate(_Request):
    customer_id: str = Reference
    plan_id: str = Reference
    start_at: str | None = Field(default=None, pattern=RFC3339_PATTERN, description="Default: now.")


class SubscriptionCancel(_Request):
    at_period_end: bool = Field(
        default=False, description="true: at the end of the current period; false: now."
    )


class Subscription(_Response):
    id: str
    object: Literal["subscription"]
    customer_id: str
    plan_id: str
    status: Literal["trialing", "active", "past_due", "canceled"]
    start_at: str = Timestamp
    trial_end: str | None
    current_period_start: str = Timestamp
    current_period_end: str = Timestamp
    cancel_at_period_end: bool
    canceled_at: str | None
    ended_at: str | None
    created_at: str = Timestamp


class SubscriptionList(_List):
    data: list[Subscription]


# --- usage events --------------------------------------------------------------------------------
class UsageEventIn(_Request):
    """Exactly one of `customer_id` / `subscription_id`. A bad event is reported in `rejected`,
    it does not fail the batch."""

    event_id: str = Field(
        max_length=MAX_EVENT_ID_LENGTH, pattern=_VISIBLE_ASCII, description="Unique per tenant."
    )
    customer_id: str | None = Field(
        default=None, max_length=MAX_SUBJECT_ID_LENGTH, pattern=_VISIBLE_ASCII
    )
    subscription_id: str | None = Field(
        default=None, max_length=MAX_SUBJECT_ID_LENGTH, pattern=_VISIBLE_ASCII
    )
    metric: MetricCode
    timestamp: str = Field(
        pattern=RFC3339_PATTERN, description="At most 5 minutes in the future; truncated to ms."
    )
    properties: dict[str, str | int | float | bool | None] | None = Field(
        default=None, max_length=MAX_PROPERTIES, description="JSON scalars only."
    )


class UsageEventsCreate(_Request):
    events: list[UsageEventIn] = Field(max_length=MAX_EVENTS_PER_BATCH)


class UsageRejection(_Response):
    index: int
    event_id: str | None = Field(description="null when the item had no string event_id.")
    code: str
    detail: str


class UsageIngestion(_Response):
    object: Literal["usage_ingestion"]
    accepted: int
    duplicates: int
    rejected: list[UsageRejection]


# --- billing runs --------------------------------------------------------------------------------
class BillingRunCreate(_Request):
    as_of: str = Field(pattern=RFC3339_PATTERN, description="Not after now: periods ended by then.")


class BillingRun(_Response):
    id: str
    object: Literal["billing_run"]
    as_of: str = Timestamp
    status: Literal["running", "completed"]
    invoices_created: int
    invoices_existing: int
    charges_attempted: int
    charges_succeeded: int
    charges_failed: int
    charges_pending: int
    created_at: str = Timestamp
    completed_at: str | None


# --- invoices ------------------------------------------------------------------------------------
class UpcomingInvoiceLine(_Response):
    description: str
    quantity: int
    unit_amount: int
    amount: int
    kind: Literal["price", "adjustment"]
    metric: str | None


class InvoiceLine(UpcomingInvoiceLine):
    period_start: str = Timestamp
    period_end: str = Timestamp


class InvoiceAttempt(_Response):
    number: int
    charge_id: str | None
    status: Literal["pending", "succeeded", "failed"]
    failure_code: str | None
    at: str = Timestamp


class Invoice(_Response):
    id: str
    object: Literal["invoice"]
    subscription_id: str
    customer_id: str
    period_start: str = Timestamp
    period_end: str = Timestamp
    currency: str
    lines: list[InvoiceLine]
    total: int
    amount_paid: int
    status: INVOICE_STATUSES
    charge_id: str | None
    attempts: list[InvoiceAttempt]
    next_attempt_at: str | None = Field(description="null unless the invoice is open.")
    created_at: str = Timestamp
    paid_at: str | None


class InvoiceList(_List):
    data: list[Invoice]


class UpcomingInvoice(_Response):
    """A dry run of the next invoice: nothing is stored."""

    object: Literal["upcoming_invoice"]
    subscription_id: str
    customer_id: str
    period_start: str = Timestamp
    period_end: str = Timestamp
    currency: str
    lines: list[UpcomingInvoiceLine]
    total: int
    as_of: str = Timestamp
