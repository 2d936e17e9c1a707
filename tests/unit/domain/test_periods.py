"""Billing-period arithmetic: anchored day-of-month, contiguity, trials, limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billkeep.domain.errors import ValidationFailed
from billkeep.domain.periods import (
    MAX_INTERVAL_COUNT,
    MAX_PERIODS_PER_CALL,
    MAX_TRIAL_DAYS,
    MS_PER_DAY,
    Interval,
    Period,
    add_months_anchored,
    billing_anchor_ms,
    civil_from_ms,
    days_in_month,
    ms_from_civil,
    parse_interval,
    parse_interval_count,
    parse_trial_days,
    period_at,
    period_bounds,
    period_index_at,
    periods_ending_by,
    trial_end_ms,
)


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, ms: int = 0) -> int:
    moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)) + ms


def ymd(value_ms: int) -> tuple[int, int, int]:
    year, month, day, _ = civil_from_ms(value_ms)
    return year, month, day


# --- calendar primitives agree with the standard library ---------------------------------------

instants = st.integers(min_value=0, max_value=utc_ms(9000, 1, 1))


@given(instants)
def test_civil_conversion_matches_datetime_and_round_trips(value_ms: int) -> None:
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value_ms)
    year, month, day, ms_of_day = civil_from_ms(value_ms)
    assert (year, month, day) == (expected.year, expected.month, expected.day)
    assert ms_from_civil(year, month, day, ms_of_day) == value_ms


# --- anchored day of month -----------------------------------------------------------------------


def test_jan_31_start_clamps_each_month_and_never_drifts_to_the_28th() -> None:
    anchor_ms = utc_ms(2025, 1, 31, 9, 30, ms=250)
    starts = [period_bounds(anchor_ms, "month", 1, n)[0] for n in range(13)]
    assert [ymd(s) for s in starts] == [
        (2025, 1, 31), (2025, 2, 28), (2025, 3, 31), (2025, 4, 30), (2025, 5, 31),
        (2025, 6, 30), (2025, 7, 31), (2025, 8, 31), (2025, 9, 30), (2025, 10, 31),
        (2025, 11, 30), (2025, 12, 31), (2026, 1, 31),
    ]  # fmt: skip
    # Time of day is preserved to the millisecond in every period.
    assert {civil_from_ms(s)[3] for s in starts} == {(9 * 60 + 30) * 60_000 + 250}


def test_leap_year_february_gets_the_29th() -> None:
    anchor_ms = utc_ms(2024, 1, 31)
    assert ymd(period_bounds(anchor_ms, "month", 1, 1)[0]) == (2024, 2, 29)
    assert ymd(period_bounds(anchor_ms, "month", 1, 2)[0]) == (2024, 3, 31)


def test_yearly_from_feb_29_clamps_to_28_and_returns_to_29_in_leap_years() -> None:
    anchor_ms = utc_ms(2024, 2, 29)
    starts = [ymd(period_bounds(anchor_ms, "year", 1, n)[0]) for n in range(5)]
    assert starts == [(2024, 2, 29), (2025, 2, 28), (2026, 2, 28), (2027, 2, 28), (2028, 2, 29)]


def test_1900_is_not_leap_but_2000_is() -> None:
    assert ymd(add_months_anchored(utc_ms(2000, 1, 31), 1)) == (2000, 2, 29)
    assert ymd(add_months_anchored(utc_ms(2100, 1, 31), 1)) == (2100, 2, 28)


def test_interval_count_multiplies_the_interval() -> None:
    anchor_ms = utc_ms(2025, 8, 31)
    assert period_bounds(anchor_ms, "month", 3, 1) == (utc_ms(2025, 11, 30), utc_ms(2026, 2, 28))
    assert period_bounds(anchor_ms, "year", 2, 1) == (utc_ms(2027, 8, 31), utc_ms(2029, 8, 31))


intervals = st.sampled_from(["month", "year"])
counts = st.integers(min_value=1, max_value=24)
anchors = st.integers(min_value=utc_ms(1990, 1, 1), max_value=utc_ms(2100, 1, 1))


@settings(max_examples=200)
@given(anchors, intervals, counts, st.integers(min_value=0, max_value=40))
def test_periods_are_contiguous_strictly_increasing_and_anchored(
    anchor_ms: int, interval: Interval, interval_count: int, first: int
) -> None:
    _, _, anchor_day, anchor_ms_of_day = civil_from_ms(anchor_ms)
    previous_end_ms: int | None = None
    for index in range(first, first + 15):
        start_ms, end_ms = period_bounds(anchor_ms, interval, interval_count, index)
        assert start_ms < end_ms
        if previous_end_ms is not None:
            assert start_ms == previous_end_ms, "no gap and no overlap between periods"
        previous_end_ms = end_ms
        year, month, day, ms_of_day = civil_from_ms(start_ms)
        assert ms_of_day == anchor_ms_of_day
        # The day is the anchor day, or the month's last day when the month is too short.
        assert day == min(anchor_day, days_in_month(year, month))


@settings(max_examples=200)
@given(anchors, intervals, counts, st.integers(min_value=0, max_value=5000 * MS_PER_DAY))
def test_period_index_at_finds_the_containing_period(
    anchor_ms: int, interval: Interval, interval_count: int, offset_ms: int
) -> None:
    at_ms = anchor_ms + offset_ms
    period = period_at(anchor_ms, interval, interval_count, at_ms)
    assert period is not None
    assert period.start_ms <= at_ms < period.end_ms
    assert period_index_at(anchor_ms, interval, interval_count, period.start_ms) == period.index
    assert period_index_at(anchor_ms, interval, interval_count, period.end_ms) == period.index + 1
    assert period_index_at(anchor_ms, interval, interval_count, period.end_ms - 1) == period.index


def test_period_index_before_the_anchor_is_none() -> None:
    anchor_ms = utc_ms(2025, 3, 15)
    assert period_index_at(anchor_ms, "month", 1, anchor_ms - 1) is None
    assert period_at(anchor_ms, "month", 1, anchor_ms - 1) is None
    assert period_index_at(anchor_ms, "month", 1, anchor_ms) == 0


# --- enumeration for billing runs ------------------------------------------------------------------


def test_periods_ending_by_includes_a_period_ending_exactly_at_as_of() -> None:
    anchor_ms = utc_ms(2025, 1, 31)
    periods = periods_ending_by(anchor_ms, "month", 1, utc_ms(2025, 3, 31))
    assert periods == [
        Period(0, utc_ms(2025, 1, 31), utc_ms(2025, 2, 28)),
        Period(1, utc_ms(2025, 2, 28), utc_ms(2025, 3, 31)),
    ]
    # One millisecond earlier, period 1 has not ended yet.
    assert len(periods_ending_by(anchor_ms, "month", 1, utc_ms(2025, 3, 31) - 1)) == 1
    assert periods_ending_by(anchor_ms, "month", 1, anchor_ms) == []


def test_periods_ending_by_pages_with_limit_and_from_index() -> None:
    anchor_ms = utc_ms(2000, 1, 1)
    as_of_ms = utc_ms(2010, 1, 1)
    first_page = periods_ending_by(anchor_ms, "month", 1, as_of_ms, limit=50)
    second_page = periods_ending_by(anchor_ms, "month", 1, as_of_ms, limit=100, from_index=50)
    assert [p.index for p in first_page] == list(range(50))
    assert [p.index for p in second_page] == list(range(50, 120))
    assert first_page[-1].end_ms == second_page[0].start_ms
    assert second_page[-1].end_ms == as_of_ms


def test_periods_ending_by_never_returns_more_than_the_named_limit() -> None:
    anchor_ms = utc_ms(1970, 1, 1)
    periods = periods_ending_by(anchor_ms, "month", 1, utc_ms(9999, 1, 1))
    assert len(periods) == MAX_PERIODS_PER_CALL
    with pytest.raises(ValueError):
        periods_ending_by(anchor_ms, "month", 1, utc_ms(9999, 1, 1), limit=MAX_PERIODS_PER_CALL + 1)
    with pytest.raises(ValueError):
        periods_ending_by(anchor_ms, "month", 1, utc_ms(9999, 1, 1), limit=0)


# --- trials --------------------------------------------------------------------------------------


def test_trial_days_move_the_anchor_to_the_trial_end() -> None:
    start_ms = utc_ms(2025, 1, 17, 12)
    assert trial_end_ms(start_ms, 0) == start_ms
    anchor_ms = billing_anchor_ms(start_ms, 14)
    assert anchor_ms == utc_ms(2025, 1, 31, 12)
    # The first billing period starts at trial end, and the anchor day is the trial end's day.
    assert period_bounds(anchor_ms, "month", 1, 0) == (
        utc_ms(2025, 1, 31, 12),
        utc_ms(2025, 2, 28, 12),
    )
    assert ymd(period_bounds(anchor_ms, "month", 1, 2)[0]) == (2025, 3, 31)
    # During the trial there is no billing period.
    assert period_index_at(anchor_ms, "month", 1, start_ms) is None


def test_trial_days_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        trial_end_ms(0, MAX_TRIAL_DAYS + 1)
    with pytest.raises(ValueError):
        trial_end_ms(0, -1)


# --- argument and API validation -------------------------------------------------------------------


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        period_bounds(0, "week", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        period_bounds(0, "month", 0, 0)
    with pytest.raises(ValueError):
        period_bounds(0, "month", 1, -1)
    with pytest.raises(ValueError):
        period_bounds(-1, "month", 1, 0)
    with pytest.raises(TypeError):
        period_bounds(1.5, "month", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calendar"):
        period_bounds(utc_ms(9999, 6, 1), "year", 1, 1)


@pytest.mark.parametrize(
    ("parser", "value", "expected"),
    [
        (parse_interval, "month", "month"),
        (parse_interval, "year", "year"),
        (parse_interval_count, None, 1),
        (parse_interval_count, 3, 3),
        (parse_trial_days, None, 0),
        (parse_trial_days, 14, 14),
    ],
)
def test_api_values_parse(parser: object, value: object, expected: object) -> None:
    assert parser(value, "x") == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    ("parser", "value"),
    [
        (parse_interval, "week"),
        (parse_interval, "Month"),
        (parse_interval, None),
        (parse_interval_count, 0),
        (parse_interval_count, MAX_INTERVAL_COUNT + 1),
        (parse_interval_count, True),
        (parse_interval_count, 1.0),
        (parse_trial_days, -1),
        (parse_trial_days, MAX_TRIAL_DAYS + 1),
        (parse_trial_days, "7"),
    ],
)
def test_invalid_api_values_name_the_field(parser: object, value: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parser(value, "plans.interval_x")  # type: ignore[operator]
    assert [e.field for e in caught.value.errors] == ["plans.interval_x"]
