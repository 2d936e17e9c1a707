"""The OpenAPI models restate the engine's enumerations and accepted fields (pydantic `Literal`s
and fields cannot be built from them): these tests keep both in step, so a new break type, event
outcome, price type or request field cannot go undocumented."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel

from billkeep.api import models_billing as billing
from billkeep.api import models_reconciliation as reconciliation
from billkeep.billing.queries import INVOICE_STATUSES
from billkeep.domain import pricing, usage
from billkeep.domain.metrics import AGGREGATIONS
from billkeep.reconciliation.matching import BREAK_KINDS
from billkeep.reconciliation.runner import empty_summary
from billkeep.webhooks.inbox import EventOutcome


def _fields(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_enumerations_match_the_engine() -> None:
    assert set(get_args(reconciliation.BREAK_TYPES)) == {kind.value for kind in BREAK_KINDS}
    assert set(get_args(reconciliation.EVENT_OUTCOMES)) == {o.value for o in EventOutcome}
    assert set(get_args(billing.AGGREGATIONS)) == set(AGGREGATIONS)
    assert set(get_args(billing.INVOICE_STATUSES)) == set(INVOICE_STATUSES)


def test_summary_counts_match_the_runner() -> None:
    summary = empty_summary()
    assert _fields(reconciliation.ReconciliationSummary) == set(summary)
    assert _fields(reconciliation.ReconciliationBreakCounts) == set(summary["breaks"])


def test_request_fields_match_what_the_engine_accepts() -> None:
    prices: dict[str, type[BaseModel]] = {
        "flat": billing.FlatPrice,
        "per_unit": billing.PerUnitPrice,
        "graduated": billing.GraduatedPrice,
        "volume": billing.VolumePrice,
        "package": billing.PackagePrice,
    }
    assert set(prices) == set(pricing.PRICE_TYPES)
    for price_type, model in prices.items():
        assert _fields(model) == pricing._PRICE_KEYS[price_type], price_type
    assert _fields(billing.Tier) == pricing._TIER_KEYS
    assert _fields(billing.PlanCreate) == pricing._PLAN_KEYS
    assert _fields(billing.UsageEventIn) == usage._EVENT_KEYS
    assert _fields(billing.UsageEventsCreate) == usage._BATCH_KEYS
