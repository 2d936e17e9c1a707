"""Double-entry rules without a database: what makes an entry valid, and how a conflict is named."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billkeep.domain.errors import UnbalancedEntry, ValidationFailed
from billkeep.domain.ledger import (
    MAX_POSTINGS_PER_ENTRY,
    AccountType,
    Direction,
    PostingSpec,
    assert_balanced,
    content_hash,
    diff_postings,
)
from billkeep.domain.money import MAX_AMOUNT_MINOR

__all__: list[str] = []

DEBIT, CREDIT = Direction.DEBIT, Direction.CREDIT


def posting(
    direction: Direction, amount: Any, currency: str = "usd", code: str = "cash"
) -> PostingSpec:
    return PostingSpec(code, AccountType.ASSET, direction, amount, currency)


def as_stored(specs: list[PostingSpec]) -> list[tuple[str, str, int, str]]:
    return [(s.account_code, s.direction.value, s.amount_minor, s.currency) for s in specs]


SALE = [posting(DEBIT, 1000, code="receivable"), posting(CREDIT, 1000, code="revenue")]


# --- assert_balanced ------------------------------------------------------------------------------


def test_balanced_single_and_multi_currency_entries_pass() -> None:
    assert_balanced(SALE)
    assert_balanced(
        [
            posting(DEBIT, 700),
            posting(DEBIT, 300),
            posting(CREDIT, 1000, code="revenue"),
            posting(CREDIT, 5, "jpy"),
            posting(DEBIT, 5, "jpy", code="fees"),
        ]
    )


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_postings_is_unbalanced(count: int) -> None:
    with pytest.raises(UnbalancedEntry):
        assert_balanced(SALE[:count])


def test_balance_is_per_currency_not_across_currencies() -> None:
    # 100 usd against 100 eur sums to zero numerically, but is two unbalanced currencies.
    with pytest.raises(UnbalancedEntry) as raised:
        assert_balanced([posting(DEBIT, 100, "usd"), posting(CREDIT, 100, "eur")])
    assert "usd" in str(raised.value) and "eur" in str(raised.value)


def test_one_unbalanced_currency_fails_the_entry() -> None:
    with pytest.raises(UnbalancedEntry) as raised:
        assert_balanced([*SALE, posting(DEBIT, 5, "jpy"), posting(CREDIT, 4, "jpy")])
    assert "jpy: debits 5 != credits 4" in str(raised.value)
    assert "usd" not in str(raised.value)


def test_posting_count_limit_is_inclusive() -> None:
    pairs = MAX_POSTINGS_PER_ENTRY // 2
    assert_balanced([posting(DEBIT, 1), posting(CREDIT, 1)] * pairs)
    with pytest.raises(ValidationFailed) as raised:
        assert_balanced([posting(DEBIT, 1), posting(CREDIT, 1)] * pairs + [posting(DEBIT, 0)])
    assert raised.value.errors[0].field == "postings"


@pytest.mark.parametrize(
    "amount", [10.0, 10.5, True, False, "10", None, 0, -10, MAX_AMOUNT_MINOR + 1]
)
def test_posting_amount_must_be_a_positive_int_in_range(amount: Any) -> None:
    entry = [posting(DEBIT, 10), posting(CREDIT, amount), posting(CREDIT, 10)]
    with pytest.raises(ValidationFailed) as raised:
        assert_balanced(entry)
    assert raised.value.errors[0].field == "postings[1].amount"


def test_largest_amount_is_accepted() -> None:
    assert_balanced([posting(DEBIT, MAX_AMOUNT_MINOR), posting(CREDIT, MAX_AMOUNT_MINOR)])


@pytest.mark.parametrize("currency", ["USD", "xyz", "xau", "", "us"])
def test_posting_currency_must_be_a_known_lowercase_code(currency: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        assert_balanced([posting(DEBIT, 10, currency), posting(CREDIT, 10, currency)])
    assert raised.value.errors[0].field == "currency"


amounts = st.integers(min_value=1, max_value=10**9)


@settings(suppress_health_check=[HealthCheck.too_slow])  # shared, loaded CI machines
@given(
    debits=st.lists(amounts, min_size=1, max_size=5),
    credit_count=st.integers(1, 5),
    delta=st.integers(-5, 5),
)
def test_balanced_iff_debits_equal_credits(
    debits: list[int], credit_count: int, delta: int
) -> None:
    total = sum(debits)
    credits = [total // credit_count] * (credit_count - 1)
    credits.append(total - sum(credits) + delta)
    entry = [posting(DEBIT, a) for a in debits] + [posting(CREDIT, a) for a in credits]
    if min(credits) <= 0:
        with pytest.raises(ValidationFailed):
            assert_balanced(entry)
    elif delta != 0:
        with pytest.raises(UnbalancedEntry):
            assert_balanced(entry)
    else:
        assert_balanced(entry)


# --- diff_postings ----------------------------------------------------------------------------------


def test_identical_postings_have_no_difference() -> None:
    assert diff_postings(as_stored(SALE), SALE) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"account_code": "other"}, "postings[1].account"),
        ({"direction": DEBIT}, "postings[1].direction"),
        ({"amount_minor": 999}, "postings[1].amount"),
        ({"currency": "eur"}, "postings[1].currency"),
    ],
)
def test_difference_names_the_field_and_index(change: dict[str, Any], field: str) -> None:
    requested = [SALE[0], replace(SALE[1], **change)]
    assert diff_postings(as_stored(SALE), requested) == field


def test_first_difference_wins_in_posting_then_field_order() -> None:
    requested = [
        replace(SALE[0], amount_minor=1, currency="eur"),
        replace(SALE[1], account_code="x"),
    ]
    assert diff_postings(as_stored(SALE), requested) == "postings[0].amount"


def test_posting_order_matters() -> None:
    assert diff_postings(as_stored(SALE), list(reversed(SALE))) == "postings[0].account"


def test_other_number_of_postings_names_postings() -> None:
    assert diff_postings(as_stored(SALE), [*SALE, posting(DEBIT, 1)]) == "postings"
    assert diff_postings(as_stored(SALE), SALE[:1]) == "postings"


# --- content_hash -----------------------------------------------------------------------------------


def test_content_hash_is_stable_and_sensitive_to_every_field() -> None:
    base = content_hash("sale", SALE, False, "ch_1")
    assert base == content_hash("sale", list(SALE), False, "ch_1")
    variants = {
        content_hash("sale!", SALE, False, "ch_1"),
        content_hash("sale", SALE, True, "ch_1"),
        content_hash("sale", SALE, False, None),
        content_hash("sale", list(reversed(SALE)), False, "ch_1"),
        content_hash("sale", [SALE[0], replace(SALE[1], amount_minor=1001)], False, "ch_1"),
        content_hash("sale", [SALE[0], replace(SALE[1], currency="eur")], False, "ch_1"),
        content_hash("sale", [SALE[0], replace(SALE[1], direction=DEBIT)], False, "ch_1"),
        content_hash("sale", [SALE[0], replace(SALE[1], account_code="x")], False, "ch_1"),
    }
    assert base not in variants and len(variants) == 8
