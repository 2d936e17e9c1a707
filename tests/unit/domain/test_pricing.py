"""Prices and plans: parsing with named fields, invoice lines, boundaries, overflow."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billkeep.domain.errors import ValidationFailed
from billkeep.domain.money import MAX_AMOUNT_MINOR, allocate_largest_remainder
from billkeep.domain.pricing import (
    MAX_PRICES_PER_PLAN,
    MAX_QUANTITY,
    MAX_TIERS,
    PLAN_CODE_MAX_LENGTH,
    BillingOverflow,
    FlatPrice,
    GraduatedPrice,
    InvoiceLine,
    PackagePrice,
    PerUnitPrice,
    Plan,
    Tier,
    VolumePrice,
    lines_total_minor,
    parse_plan,
    parse_price,
    price_lines,
    price_metric,
)

TIERS_JSON: list[dict[str, Any]] = [
    {"up_to": 100, "unit_amount": 0, "flat_amount": 500},
    {"up_to": 1000, "unit_amount": 2},
    {"up_to": None, "unit_amount": 1},
]
TIERS = (Tier(100, 0, 500), Tier(1000, 2, 0), Tier(None, 1, 0))
GRADUATED = GraduatedPrice("api_calls", TIERS)
VOLUME = VolumePrice("api_calls", TIERS)
PACKAGE = PackagePrice("sms", 100, 250)
PER_UNIT = PerUnitPrice("seats", 1200)
FLAT = FlatPrice(4900, "Base fee")


def amounts(lines: list[InvoiceLine]) -> list[tuple[str, int, int, int]]:
    return [(ln.description, ln.quantity, ln.unit_amount_minor, ln.amount_minor) for ln in lines]


def total(price: Any, quantity: int) -> int:
    return lines_total_minor(price_lines(price, quantity))


# --- invoice lines: table per price type -----------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expected_lines"),
    [
        (0, [("api_calls", 0, 0, 0)]),
        (1, [("api_calls tier 1 (1-100)", 1, 0, 0), ("api_calls tier 1 (1-100) flat fee", 1, 500, 500)]),
        (100, [("api_calls tier 1 (1-100)", 100, 0, 0), ("api_calls tier 1 (1-100) flat fee", 1, 500, 500)]),
        (101, [
            ("api_calls tier 1 (1-100)", 100, 0, 0),
            ("api_calls tier 1 (1-100) flat fee", 1, 500, 500),
            ("api_calls tier 2 (101-1000)", 1, 2, 2),
        ]),
        (1000, [
            ("api_calls tier 1 (1-100)", 100, 0, 0),
            ("api_calls tier 1 (1-100) flat fee", 1, 500, 500),
            ("api_calls tier 2 (101-1000)", 900, 2, 1800),
        ]),
        (1001, [
            ("api_calls tier 1 (1-100)", 100, 0, 0),
            ("api_calls tier 1 (1-100) flat fee", 1, 500, 500),
            ("api_calls tier 2 (101-1000)", 900, 2, 1800),
            ("api_calls tier 3 (1001+)", 1, 1, 1),
        ]),
    ],
)  # fmt: skip
def test_graduated_lines_one_per_touched_tier(
    quantity: int, expected_lines: list[tuple[str, int, int, int]]
) -> None:
    assert amounts(price_lines(GRADUATED, quantity)) == expected_lines


@pytest.mark.parametrize(
    ("quantity", "expected_lines"),
    [
        (0, [("api_calls", 0, 0, 0)]),
        (1, [("api_calls tier 1 (1-100)", 1, 0, 0), ("api_calls tier 1 (1-100) flat fee", 1, 500, 500)]),
        (100, [("api_calls tier 1 (1-100)", 100, 0, 0), ("api_calls tier 1 (1-100) flat fee", 1, 500, 500)]),
        (101, [("api_calls tier 2 (101-1000)", 101, 2, 202)]),
        (1000, [("api_calls tier 2 (101-1000)", 1000, 2, 2000)]),
        (1001, [("api_calls tier 3 (1001+)", 1001, 1, 1001)]),
    ],
)  # fmt: skip
def test_volume_prices_all_units_at_the_reached_tier(
    quantity: int, expected_lines: list[tuple[str, int, int, int]]
) -> None:
    assert amounts(price_lines(VOLUME, quantity)) == expected_lines


@pytest.mark.parametrize(
    ("quantity", "packages", "amount"),
    [
        (0, 0, 0),
        (1, 1, 250),
        (99, 1, 250),
        (100, 1, 250),
        (101, 2, 500),
        (200, 2, 500),
        (201, 3, 750),
    ],
)
def test_package_rounds_partial_packages_up(quantity: int, packages: int, amount: int) -> None:
    lines = price_lines(PACKAGE, quantity)
    assert len(lines) == 1
    assert (lines[0].quantity, lines[0].unit_amount_minor, lines[0].amount_minor) == (
        packages,
        250,
        amount,
    )
    if quantity:
        assert lines[0].description == f"sms ({quantity} units in packages of 100)"


@pytest.mark.parametrize(("quantity", "amount"), [(0, 0), (1, 1200), (7, 8400)])
def test_per_unit_multiplies(quantity: int, amount: int) -> None:
    assert amounts(price_lines(PER_UNIT, quantity)) == [("seats", quantity, 1200, amount)]


def test_flat_fee_is_charged_per_quantity_and_uses_its_description() -> None:
    assert amounts(price_lines(FLAT, 1)) == [("Base fee", 1, 4900, 4900)]
    assert amounts(price_lines(FlatPrice(100), 1)) == [("Flat fee", 1, 100, 100)]
    assert price_lines(FLAT, 0)[0].amount_minor == 0


def test_price_metric() -> None:
    assert price_metric(FLAT) is None
    assert price_metric(GRADUATED) == "api_calls"


def test_negative_or_non_int_quantity_is_a_programming_error() -> None:
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError):
            price_lines(PER_UNIT, bad)  # type: ignore[arg-type]


def test_overflow_is_a_clear_error_not_a_huge_amount() -> None:
    with pytest.raises(BillingOverflow, match="exceeds"):
        price_lines(PerUnitPrice("m", MAX_AMOUNT_MINOR), 2)
    with pytest.raises(BillingOverflow):
        price_lines(PER_UNIT, MAX_QUANTITY + 1)
    # Two lines each within the limit whose sum is not.
    tiers = (Tier(1, MAX_AMOUNT_MINOR, 0), Tier(None, MAX_AMOUNT_MINOR, 0))
    with pytest.raises(BillingOverflow, match="total"):
        price_lines(GraduatedPrice("m", tiers), 2)
    # Exactly at the limit is fine.
    assert total(PerUnitPrice("m", MAX_AMOUNT_MINOR), 1) == MAX_AMOUNT_MINOR
    assert BillingOverflow.status == 422


# --- properties ----------------------------------------------------------------------------------

amount_minor = st.integers(min_value=0, max_value=10_000)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=5000), max_size=6)))
    tiers = [Tier(b, draw(amount_minor), draw(amount_minor)) for b in bounds]
    tiers.append(Tier(None, draw(amount_minor), draw(amount_minor)))
    return tuple(tiers)


quantities = st.integers(min_value=0, max_value=20_000)


@given(tier_lists(), quantities, quantities)
def test_graduated_total_is_monotonic_in_quantity(
    tiers: tuple[Tier, ...], first: int, second: int
) -> None:
    low, high = sorted((first, second))
    price = GraduatedPrice("m", tiers)
    assert total(price, low) <= total(price, high)


@given(tier_lists(), quantities)
def test_graduated_prices_every_unit_once_and_adds_touched_flat_fees(
    tiers: tuple[Tier, ...], quantity: int
) -> None:
    expected = 0
    for unit in range(1, min(quantity, 5001) + 1):
        tier = next(t for t in tiers if t.up_to is None or unit <= t.up_to)
        expected += tier.unit_amount_minor
    expected += max(0, quantity - 5001) * tiers[-1].unit_amount_minor
    lower = 0
    for tier in tiers:
        if quantity > lower:
            expected += tier.flat_amount_minor
        if tier.up_to is None:
            break
        lower = tier.up_to
    assert total(GraduatedPrice("m", tiers), quantity) == expected


@given(tier_lists(), st.integers(min_value=1, max_value=20_000))
def test_volume_is_piecewise_linear_with_the_reached_tier(
    tiers: tuple[Tier, ...], quantity: int
) -> None:
    tier = next(t for t in tiers if t.up_to is None or quantity <= t.up_to)
    expected = quantity * tier.unit_amount_minor + tier.flat_amount_minor
    assert total(VolumePrice("m", tiers), quantity) == expected
    # Within one tier, one more unit costs exactly that tier's unit price.
    if tier.up_to is None or quantity < tier.up_to:
        step = total(VolumePrice("m", tiers), quantity + 1) - expected
        assert step == tier.unit_amount_minor


@given(st.integers(min_value=1, max_value=1000), quantities, st.integers(1, 10_000))
def test_package_count_is_the_ceiling(size: int, quantity: int, amount: int) -> None:
    lines = price_lines(PackagePrice("m", size, amount), quantity)
    packages = lines[0].quantity
    assert packages * size >= quantity
    assert (packages - 1) * size < quantity or packages == 0


# --- largest remainder (used to split amounts without losing a minor unit) -----------------------


@pytest.mark.parametrize(
    ("total_minor", "weights", "parts"),
    [
        (100, [1, 1, 1], [34, 33, 33]),
        (5, [1, 1], [3, 2]),
        (1, [1, 1, 1], [1, 0, 0]),
        (10, [0, 1], [0, 10]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (1000, [3, 7], [300, 700]),
        (7, [2, 3, 5], [1, 2, 4]),
    ],
)
def test_largest_remainder_allocation(
    total_minor: int, weights: list[int], parts: list[int]
) -> None:
    assert allocate_largest_remainder(total_minor, weights) == parts


@given(st.integers(-(10**12), 10**12), st.lists(st.integers(0, 1000), min_size=1, max_size=10))
def test_largest_remainder_conserves_the_total(total_minor: int, weights: list[int]) -> None:
    if sum(weights) == 0:
        return
    parts = allocate_largest_remainder(total_minor, weights)
    assert sum(parts) == total_minor
    for part, weight in zip(parts, weights, strict=True):
        exact = total_minor * weight / sum(weights)
        assert abs(part - exact) < 1


# --- parsing -------------------------------------------------------------------------------------


def plan_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": "pro",
        "name": "Pro",
        "currency": "usd",
        "interval": "month",
        "prices": [
            {"type": "flat", "amount": 4900, "description": "Base fee"},
            {"type": "per_unit", "metric": "seats", "unit_amount": 1200},
            {"type": "graduated", "metric": "api_calls", "tiers": copy.deepcopy(TIERS_JSON)},
            {"type": "volume", "metric": "api_calls", "tiers": copy.deepcopy(TIERS_JSON)},
            {"type": "package", "metric": "sms", "package_size": 100, "package_amount": 250},
        ],
    }
    body.update(overrides)
    return body


def test_parse_plan_builds_frozen_values_with_defaults() -> None:
    plan = parse_plan(plan_body())
    assert plan == Plan(
        code="pro",
        name="Pro",
        currency="usd",
        interval="month",
        interval_count=1,
        trial_days=0,
        prices=(FLAT, PER_UNIT, GRADUATED, VOLUME, PACKAGE),
    )
    with pytest.raises(AttributeError):
        plan.code = "other"  # type: ignore[misc]


def test_parse_plan_keeps_interval_count_and_trial() -> None:
    plan = parse_plan(plan_body(interval="year", interval_count=2, trial_days=14))
    assert (plan.interval, plan.interval_count, plan.trial_days) == ("year", 2, 14)


def test_zero_unit_and_flat_amounts_are_allowed_in_tiers_and_per_unit() -> None:
    price = parse_price({"type": "per_unit", "metric": "m", "unit_amount": 0})
    assert price == PerUnitPrice("m", 0)
    tiers = [{"up_to": None, "unit_amount": 0, "flat_amount": 0}]
    assert parse_price({"type": "volume", "metric": "m", "tiers": tiers}) == VolumePrice(
        "m", (Tier(None, 0, 0),)
    )


def tiered(tiers: Any) -> dict[str, Any]:
    return {"type": "graduated", "metric": "api_calls", "tiers": tiers}


@pytest.mark.parametrize(
    ("price", "fields"),
    [
        ({"type": "flat", "amount": 0}, ["prices[2].amount"]),
        ({"type": "flat", "amount": 1.5}, ["prices[2].amount"]),
        ({"type": "flat", "amount": True}, ["prices[2].amount"]),
        ({"type": "flat", "amount": "100"}, ["prices[2].amount"]),
        ({"type": "flat", "amount": MAX_AMOUNT_MINOR + 1}, ["prices[2].amount"]),
        ({"type": "flat", "amount": 1, "currency": "eur"}, ["prices[2].currency"]),
        ({"type": "tiered"}, ["prices[2].type"]),
        ({"amount": 5}, ["prices[2].type"]),
        ("flat", ["prices[2]"]),
        ({"type": "per_unit", "unit_amount": -1}, ["prices[2].metric", "prices[2].unit_amount"]),
        ({"type": "per_unit", "metric": "bad metric", "unit_amount": 1}, ["prices[2].metric"]),
        ({"type": "package", "metric": "m", "package_size": 0, "package_amount": 1},
         ["prices[2].package_size"]),
        ({"type": "package", "metric": "m", "package_size": 10, "package_amount": 0},
         ["prices[2].package_amount"]),
        (tiered([]), ["prices[2].tiers"]),
        (tiered(None), ["prices[2].tiers"]),
        (tiered([{"up_to": 10, "unit_amount": 1}]), ["prices[2].tiers[0].up_to"]),
        (tiered([{"up_to": None, "unit_amount": 1}, {"up_to": None, "unit_amount": 1}]),
         ["prices[2].tiers[0].up_to"]),
        (tiered([{"unit_amount": 1}]), ["prices[2].tiers[0].up_to"]),
        (tiered([{"up_to": 0, "unit_amount": 1}, {"up_to": None, "unit_amount": 1}]),
         ["prices[2].tiers[0].up_to"]),
        (tiered([{"up_to": 10, "unit_amount": 1}, {"up_to": 10, "unit_amount": 1},
                 {"up_to": None, "unit_amount": 1}]), ["prices[2].tiers[1].up_to"]),
        (tiered([{"up_to": 10, "unit_amount": 1}, {"up_to": 5, "unit_amount": 1},
                 {"up_to": None, "unit_amount": 1}]), ["prices[2].tiers[1].up_to"]),
        (tiered([{"up_to": 10.0, "unit_amount": 1}, {"up_to": None, "unit_amount": 1}]),
         ["prices[2].tiers[0].up_to"]),
        (tiered([{"up_to": 10, "unit_amount": 1}, {"up_to": None, "unit_amount": 1.5}]),
         ["prices[2].tiers[1].unit_amount"]),
        (tiered([{"up_to": None, "unit_amount": 1, "flat_amount": -1}]),
         ["prices[2].tiers[0].flat_amount"]),
        (tiered([{"up_to": None, "unit_amount": 1, "upto": 5}]), ["prices[2].tiers[0].upto"]),
        (tiered(["x"]), ["prices[2].tiers[0]"]),
        (tiered([{"up_to": 1, "unit_amount": 1}] * MAX_TIERS + [{"up_to": None, "unit_amount": 1}]),
         ["prices[2].tiers"]),
    ],
)  # fmt: skip
def test_invalid_price_errors_name_the_exact_field(price: Any, fields: list[str]) -> None:
    body = plan_body()
    body["prices"][2] = price
    with pytest.raises(ValidationFailed) as caught:
        parse_plan(body)
    assert [e.field for e in caught.value.errors] == fields


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"code": ""}, ["code"]),
        ({"code": "x" * (PLAN_CODE_MAX_LENGTH + 1)}, ["code"]),
        ({"code": "pro plan"}, ["code"]),
        ({"name": ""}, ["name"]),
        ({"currency": "USD"}, ["currency"]),
        ({"currency": "xxx"}, ["currency"]),
        ({"interval": "week"}, ["interval"]),
        ({"interval_count": 0}, ["interval_count"]),
        ({"trial_days": -1}, ["trial_days"]),
        ({"prices": []}, ["prices"]),
        ({"prices": [{"type": "flat", "amount": 1}] * (MAX_PRICES_PER_PLAN + 1)}, ["prices"]),
        ({"extra": 1}, ["extra"]),
        ({"code": 5, "currency": None, "interval": None},
         ["code", "currency", "interval"]),
    ],
)  # fmt: skip
def test_invalid_plan_fields_are_all_named(overrides: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_plan(plan_body(**overrides))
    assert sorted(e.field for e in caught.value.errors) == sorted(fields)


def test_errors_in_several_prices_are_reported_together() -> None:
    body = plan_body()
    body["prices"][0]["amount"] = 0
    body["prices"][4]["package_size"] = -5
    with pytest.raises(ValidationFailed) as caught:
        parse_plan(body)
    assert [e.field for e in caught.value.errors] == [
        "prices[0].amount",
        "prices[4].package_size",
    ]


def test_parse_plan_refuses_a_non_object() -> None:
    with pytest.raises(ValidationFailed):
        parse_plan([])
