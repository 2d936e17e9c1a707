"""Money: integer minor units, one currency per arithmetic, strict parsing, lossless allocation."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billkeep.domain.errors import ValidationFailed
from billkeep.domain.money import (
    MAX_AMOUNT_MINOR,
    Money,
    allocate_largest_remainder,
    currency_exponent,
    parse_amount_minor,
    parse_currency,
)

__all__: list[str] = []

USD_10 = Money(1000, "usd")


# --- arithmetic within one currency ---------------------------------------------------------------


def test_arithmetic_within_one_currency() -> None:
    assert USD_10 + Money(5, "usd") == Money(1005, "usd")
    assert USD_10 - Money(1001, "usd") == Money(-1, "usd")
    assert Money(-1000, "usd") == -USD_10
    assert USD_10.multiply(3) == Money(3000, "usd")
    one_cent, ten = Money(1, "usd"), USD_10
    assert one_cent < ten and ten <= ten and not ten < ten
    assert ten > one_cent and ten >= one_cent and not one_cent > ten
    assert Money.zero("jpy") == Money(0, "jpy")


@pytest.mark.parametrize(
    "operation",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
    ],
)
def test_mixing_currencies_fails_loudly(operation: Any) -> None:
    with pytest.raises(ValueError, match="currency mismatch"):
        operation(USD_10, Money(1000, "eur"))


def test_equal_amounts_of_different_currencies_are_not_equal() -> None:
    assert Money(1000, "usd") != Money(1000, "eur")


@pytest.mark.parametrize("other", [5, 5.0, "5"])
def test_money_does_not_combine_with_plain_numbers(other: Any) -> None:
    with pytest.raises(TypeError):
        USD_10 + other
    with pytest.raises(TypeError):
        USD_10 - other


@pytest.mark.parametrize("factor", [1.5, 2.0, True, "2"])
def test_multiply_takes_only_integers(factor: Any) -> None:
    with pytest.raises(TypeError):
        USD_10.multiply(factor)


@pytest.mark.parametrize("amount", [10.0, True, "10", None])
def test_constructor_refuses_non_int_amounts(amount: Any) -> None:
    with pytest.raises(TypeError):
        Money(amount, "usd")


@pytest.mark.parametrize("currency", ["USD", "xyz", "xau", ""])
def test_constructor_refuses_unknown_or_non_lowercase_currencies(currency: str) -> None:
    with pytest.raises(ValueError):
        Money(1, currency)


def test_sums_may_exceed_one_amount_but_not_without_bound() -> None:
    big = Money(MAX_AMOUNT_MINOR, "usd")
    assert (big + big).amount_minor == 2 * MAX_AMOUNT_MINOR
    with pytest.raises(OverflowError):
        big.multiply(1001)


# --- formatting and exponents ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "exponent"), [("usd", 2), ("eur", 2), ("jpy", 0), ("krw", 0), ("bhd", 3)]
)
def test_currency_exponents(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(1234, "usd"), "12.34 USD"),
        (Money(-5, "usd"), "-0.05 USD"),
        (Money(500, "jpy"), "500 JPY"),
        (Money(1234, "bhd"), "1.234 BHD"),
    ],
)
def test_str_uses_the_currency_exponent(money: Money, text: str) -> None:
    assert str(money) == text


# --- parsing untrusted input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [10.0, 10.5, float("nan"), True, False, "10", "", None, [10], MAX_AMOUNT_MINOR + 1]
)
def test_parse_amount_rejects_non_integers_and_out_of_range(value: Any) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_amount_minor(value, "amount")
    assert raised.value.errors[0].field == "amount"


def test_parse_amount_bounds() -> None:
    assert parse_amount_minor(MAX_AMOUNT_MINOR) == MAX_AMOUNT_MINOR
    assert parse_amount_minor(1) == 1
    for value in (0, -1):
        with pytest.raises(ValidationFailed):
            parse_amount_minor(value)
    assert parse_amount_minor(0, allow_zero=True) == 0
    assert parse_amount_minor(-MAX_AMOUNT_MINOR, allow_negative=True) == -MAX_AMOUNT_MINOR
    with pytest.raises(ValidationFailed):
        parse_amount_minor(-MAX_AMOUNT_MINOR - 1, allow_negative=True)


@pytest.mark.parametrize(
    "value", ["USD", "Usd", " usd", "usd ", "us", "usdd", "xyz", "xau", 840, None]
)
def test_parse_currency_rejects_unknown_or_non_lowercase(value: Any) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_currency(value, "price.currency")
    assert raised.value.errors[0].field == "price.currency"


def test_parse_currency_accepts_lowercase_iso_codes() -> None:
    assert [parse_currency(c) for c in ("usd", "jpy", "bhd")] == ["usd", "jpy", "bhd"]


def test_money_parse_reports_every_bad_field() -> None:
    with pytest.raises(ValidationFailed) as raised:
        Money.parse(1.5, "USD")
    assert [e.field for e in raised.value.errors] == ["amount", "currency"]
    assert Money.parse(500, "jpy") == Money(500, "jpy")


# --- allocation -------------------------------------------------------------------------------------

weights = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=20).filter(any)


@settings(suppress_health_check=[HealthCheck.too_slow])  # shared, loaded CI machines
@given(total=st.integers(-(10**15), 10**15), weights=weights)
def test_allocation_conserves_the_total_and_stays_within_one_unit(
    total: int, weights: list[int]
) -> None:
    parts = allocate_largest_remainder(total, weights)
    assert sum(parts) == total and len(parts) == len(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, sum(weights))
        assert abs(part - exact) < 1, (part, exact)
        if weight == 0:
            assert part == 0
        assert part == 0 or (part > 0) == (total > 0), "parts keep the sign of the total"


@settings(suppress_health_check=[HealthCheck.too_slow])  # shared, loaded CI machines
@given(
    amount=st.integers(-(10**12), 10**12), weights=weights, currency=st.sampled_from(["usd", "jpy"])
)
def test_money_allocate_keeps_currency_and_total(
    amount: int, weights: list[int], currency: str
) -> None:
    parts = Money(amount, currency).allocate(weights)
    assert all(p.currency == currency for p in parts)
    assert sum(p.amount_minor for p in parts) == amount


def test_allocation_gives_leftover_units_to_largest_remainders_then_earliest() -> None:
    assert allocate_largest_remainder(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate_largest_remainder(-100, [1, 1, 1]) == [-34, -33, -33]
    assert allocate_largest_remainder(10, [1, 2, 3]) == [2, 3, 5]


@pytest.mark.parametrize("bad", [[], [0, 0], [1, -1], [1, True], [1.5]])
def test_allocation_refuses_bad_weights(bad: list[Any]) -> None:
    with pytest.raises(ValueError):
        allocate_largest_remainder(100, bad)
