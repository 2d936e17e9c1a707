"""Pure parts of billing: invoice lines with late adjustments, billable periods, statuses."""

from __future__ import annotations

import json
from types import SimpleNamespace

from billkeep.billing.invoicing import UsageRow, compute_lines
from billkeep.billing.subscriptions import billable_period
from billkeep.billing.views import subscription_status
from billkeep.domain.metrics import MetricDefinition
from billkeep.domain.periods import MS_PER_DAY, ms_from_civil
from billkeep.domain.pricing import parse_plan

JAN_1 = ms_from_civil(2026, 1, 1)
FEB_1 = ms_from_civil(2026, 2, 1)
MAR_1 = ms_from_civil(2026, 3, 1)
UNITS = {"units": MetricDefinition("units", "Units", "sum", "units")}


def _row(at_ms: int, units: int) -> UsageRow:
    return UsageRow("units", at_ms, json.dumps({"units": units}))


def test_volume_price_late_usage_never_credits() -> None:
    plan = parse_plan(
        {
            "code": "v",
            "name": "v",
            "currency": "usd",
            "interval": "month",
            "prices": [
                {
                    "type": "volume",
                    "metric": "units",
                    "tiers": [{"up_to": 10, "unit_amount": 10}, {"up_to": None, "unit_amount": 1}],
                }
            ],
        }
    )
    base = {(JAN_1, FEB_1): [_row(JAN_1 + 1, 9)]}  # billed 90
    late = [_row(JAN_1 + 2, 5)]  # 14 units at volume price 1 = 14 < 90
    lines = compute_lines(plan, UNITS, JAN_1, (FEB_1, MAR_1, True), late, base)
    adjustment = [ln for ln in lines if ln.kind == "adjustment"]
    assert len(adjustment) == 1 and adjustment[0].amount_minor == 0
    assert "+5 units" in adjustment[0].description


def test_flat_fee_only_for_complete_periods() -> None:
    plan = parse_plan(
        {
            "code": "f",
            "name": "f",
            "currency": "usd",
            "interval": "month",
            "prices": [
                {"type": "flat", "amount": 500},
                {"type": "per_unit", "metric": "units", "unit_amount": 2},
            ],
        }
    )
    full = compute_lines(plan, UNITS, JAN_1, (JAN_1, FEB_1, True), [_row(JAN_1, 3)], {})
    cut = compute_lines(
        plan, UNITS, JAN_1, (JAN_1, JAN_1 + MS_PER_DAY, False), [_row(JAN_1, 3)], {}
    )
    assert [ln.amount_minor for ln in full] == [500, 6]
    assert [ln.amount_minor for ln in cut] == [6]


def test_billable_period_truncation_and_end() -> None:
    plan = parse_plan(
        {
            "code": "m",
            "name": "m",
            "currency": "usd",
            "interval": "month",
            "prices": [{"type": "flat", "amount": 1}],
        }
    )
    assert billable_period(JAN_1, plan, 0, None) == (JAN_1, FEB_1, True)
    assert billable_period(JAN_1, plan, 0, FEB_1) == (JAN_1, FEB_1, True)
    assert billable_period(JAN_1, plan, 0, JAN_1 + 5) == (JAN_1, JAN_1 + 5, False)
    assert billable_period(JAN_1, plan, 1, FEB_1) is None


def test_status_is_derived_from_time_and_standing() -> None:
    row = SimpleNamespace(
        ended_at_ms=None, status="active", anchor_ms=JAN_1 + 14 * MS_PER_DAY, start_at_ms=JAN_1
    )
    assert subscription_status(row, JAN_1 + MS_PER_DAY) == "trialing"
    assert subscription_status(row, FEB_1) == "active"
    row.status = "past_due"
    assert subscription_status(row, FEB_1) == "past_due"
    row.ended_at_ms = FEB_1
    assert subscription_status(row, FEB_1) == "canceled"
    assert subscription_status(row, FEB_1 - 1) == "past_due"
