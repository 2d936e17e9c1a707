"""What the billing clients of the simulation did and were told: the billing auditor's outside view.

Filled by the workload (`workload.py`) as it acts, read by the audit (`audit.py`). Nothing here is
computed by billing code: plans are the numbers the clients configured, accepted events the ones
the client model predicted and the engine confirmed, and each event remembers which invoices of
its subscription already existed when it was acknowledged (that decides which invoice must bill
it, see `audit.expected_invoice`).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta

__all__ = [
    "DAY_MS",
    "AcceptedEvent",
    "BillingFacts",
    "SimPlan",
    "SimSubscription",
    "month_start_ms",
]

DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class SimPlan:
    """A flat fee per complete period plus `unit_minor` per unit of the `units` metric."""

    plan_id: str
    base_minor: int
    unit_minor: int
    currency: str


@dataclass(frozen=True)
class SimSubscription:
    tenant_id: str
    subscription_id: str
    customer_id: str
    plan: SimPlan
    anchor_ms: int
    declining: bool  # the customer's card always declines (dunning ends uncollectible)


@dataclass(frozen=True)
class AcceptedEvent:
    tenant_id: str
    event_id: str
    subscription_id: str
    timestamp_ms: int
    units: int
    # Highest period index of the subscription invoiced when the event was acknowledged (-1: none).
    invoiced_index_at_ack: int


@dataclass
class BillingFacts:
    plans: dict[str, SimPlan] = field(default_factory=dict)  # tenant -> plan
    subscriptions: dict[tuple[str, str], SimSubscription] = field(default_factory=dict)
    accepted: dict[tuple[str, str], AcceptedEvent] = field(default_factory=dict)
    # Answers that differed from what the client model predicted (found when they came back).
    answer_violations: list[tuple[str, str]] = field(default_factory=list)
    dunning_attempts: int = 0  # retries allowed after the first attempt (len(dunning delays))


def month_start_ms(anchor_ms: int, months: int) -> int:
    """`anchor_ms` moved by whole calendar months, the day clamped to the month's length, time of
    day kept (the billing calendar of docs/billing.md, computed here with the standard library)."""
    days, ms_of_day = divmod(anchor_ms, DAY_MS)
    day = _EPOCH + timedelta(days=days)
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    clamped = min(day.day, calendar.monthrange(year, month0 + 1)[1])
    return (date(year, month0 + 1, clamped) - _EPOCH).days * DAY_MS + ms_of_day
