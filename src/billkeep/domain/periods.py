"""Billing-period calendar arithmetic on integer epoch milliseconds (UTC).

A subscription's periods are anchored to its *billing anchor* (the start, or the trial end when
there is a trial). Period n starts at anchor + n * (interval_count intervals), computed from the
ORIGINAL anchor every time, never by stepping from the previous period: the day of month is the
anchor's day clamped to the target month's length (Jan 31 -> Feb 28/29 -> Mar 31 -> Apr 30 ...),
so a short month never drags later periods to the 28th. The time of day is preserved exactly.

Periods are half-open, [start_ms, end_ms): the end of period n is the start of period n + 1, so
every instant belongs to exactly one period and consecutive periods never overlap or leave gaps.

Trials (documented choice): a trial of `trial_days` lasts exactly trial_days * 24 h from the
subscription start (UTC has no DST, so a day is always 86 400 000 ms). The trial is not a billing
period and is never invoiced; the first billing period (index 0) starts at the trial end, and the
day-of-month anchor is the trial end's day. Without a trial, the anchor is the start itself.

Everything here is pure integer arithmetic (no datetime, no floats), so results are exact and
identical on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from billkeep.domain.errors import ValidationFailed

__all__ = [
    "DEFAULT_INTERVAL_COUNT",
    "MAX_INTERVAL_COUNT",
    "MAX_PERIODS_PER_CALL",
    "MAX_TIME_MS",
    "MAX_TRIAL_DAYS",
    "MIN_TIME_MS",
    "MS_PER_DAY",
    "Interval",
    "Period",
    "add_months_anchored",
    "billing_anchor_ms",
    "civil_from_ms",
    "days_in_month",
    "is_leap_year",
    "ms_from_civil",
    "parse_interval",
    "parse_interval_count",
    "parse_trial_days",
    "period_at",
    "period_bounds",
    "period_index_at",
    "periods_ending_by",
    "trial_end_ms",
]

Interval = Literal["month", "year"]
_INTERVALS: tuple[str, ...] = get_args(Interval)
_MONTHS_PER_INTERVAL: dict[str, int] = {"month": 1, "year": 12}

MS_PER_DAY = 86_400_000
# The supported calendar: the Unix epoch up to the last millisecond of year 9999 (the range of
# RFC 3339 four-digit years). Anything computed outside it is a bug or an absurd plan.
MIN_TIME_MS = 0
MAX_TIME_MS = 253_402_300_799_999
DEFAULT_INTERVAL_COUNT = 1
# Ten years of months: longer intervals are not a billing cycle anyone means.
MAX_INTERVAL_COUNT = 120
# Two years of trial is already generous; the bound keeps arithmetic inside the calendar.
MAX_TRIAL_DAYS = 730
# A billing run catching up on a long-idle subscription pages through periods this many at a time,
# so no single call builds an unbounded list.
MAX_PERIODS_PER_CALL = 1000


@dataclass(frozen=True, slots=True)
class Period:
    """Billing period `index` of a subscription: the half-open range [start_ms, end_ms)."""

    index: int
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        assert self.index >= 0, "period indexes start at 0"
        assert self.start_ms < self.end_ms, "a period is never empty"

    def contains(self, at_ms: int) -> bool:
        return self.start_ms <= at_ms < self.end_ms


# --- calendar primitives (proleptic Gregorian, H. Hinnant's days_from_civil algorithms) ---------


def is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year: int, month: int) -> int:
    assert 1 <= month <= 12, "month is 1..12"
    if month == 2:
        return 29 if is_leap_year(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a civil date."""
    shifted_year = year - 1 if month <= 2 else year
    era = shifted_year // 400
    year_of_era = shifted_year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01."""
    shifted = days + 719_468
    era = shifted // 146_097
    day_of_era = shifted - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def civil_from_ms(value_ms: int) -> tuple[int, int, int, int]:
    """(year, month, day, ms_of_day) of an epoch-millisecond instant, UTC."""
    days, ms_of_day = divmod(value_ms, MS_PER_DAY)
    year, month, day = _civil_from_days(days)
    return year, month, day, ms_of_day


def ms_from_civil(year: int, month: int, day: int, ms_of_day: int = 0) -> int:
    """Epoch milliseconds of a UTC civil date plus milliseconds into that day."""
    assert 1 <= day <= days_in_month(year, month), "day must exist in its month"
    assert 0 <= ms_of_day < MS_PER_DAY, "ms_of_day is within one day"
    return _days_from_civil(year, month, day) * MS_PER_DAY + ms_of_day


def add_months_anchored(anchor_ms: int, months: int) -> int:
    """`anchor_ms` moved by `months` calendar months, day clamped to the target month's length.

    Always computed from the anchor itself, so the anchor day is never lost: 31 Jan + 1 month is
    28/29 Feb, but 31 Jan + 2 months is 31 Mar (not 28 Mar).
    """
    year, month, day, ms_of_day = civil_from_ms(anchor_ms)
    target_year, target_month_index = divmod(year * 12 + (month - 1) + months, 12)
    target_month = target_month_index + 1
    target_day = min(day, days_in_month(target_year, target_month))
    return ms_from_civil(target_year, target_month, target_day, ms_of_day)


# --- input validation (API values) -------------------------------------------------------------


def parse_interval(value: Any, field: str = "interval") -> Interval:
    if value == "month":
        return "month"
    if value == "year":
        return "year"
    raise ValidationFailed.single(field, f"must be one of {', '.join(_INTERVALS)}")


def parse_interval_count(value: Any, field: str = "interval_count") -> int:
    """`interval_count`, defaulting to 1 when absent (None)."""
    if value is None:
        return DEFAULT_INTERVAL_COUNT
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed.single(field, "must be an integer")
    if not 1 <= value <= MAX_INTERVAL_COUNT:
        raise ValidationFailed.single(field, f"must be between 1 and {MAX_INTERVAL_COUNT}")
    return value


def parse_trial_days(value: Any, field: str = "trial_days") -> int:
    """`trial_days`, defaulting to 0 (no trial) when absent (None)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed.single(field, "must be an integer")
    if not 0 <= value <= MAX_TRIAL_DAYS:
        raise ValidationFailed.single(field, f"must be between 0 and {MAX_TRIAL_DAYS}")
    return value


# --- periods ------------------------------------------------------------------------------------


def _check_time(value_ms: int, name: str) -> None:
    if isinstance(value_ms, bool) or not isinstance(value_ms, int):
        raise TypeError(f"{name} must be an int (epoch milliseconds)")
    if not MIN_TIME_MS <= value_ms <= MAX_TIME_MS:
        raise ValueError(f"{name} is outside the supported calendar (1970..9999)")


def _months_per_period(interval: Interval, interval_count: int) -> int:
    if interval not in _MONTHS_PER_INTERVAL:
        raise ValueError(f"unknown interval {interval!r}")
    if isinstance(interval_count, bool) or not 1 <= interval_count <= MAX_INTERVAL_COUNT:
        raise ValueError(f"interval_count must be 1..{MAX_INTERVAL_COUNT}")
    return _MONTHS_PER_INTERVAL[interval] * interval_count


def trial_end_ms(start_ms: int, trial_days: int) -> int:
    """End of the trial that begins at `start_ms` (== start_ms when there is no trial)."""
    _check_time(start_ms, "start_ms")
    if isinstance(trial_days, bool) or not 0 <= trial_days <= MAX_TRIAL_DAYS:
        raise ValueError(f"trial_days must be 0..{MAX_TRIAL_DAYS}")
    end_ms = start_ms + trial_days * MS_PER_DAY
    _check_time(end_ms, "trial end")
    return end_ms


def billing_anchor_ms(start_ms: int, trial_days: int) -> int:
    """Start of billing period 0: the trial end, which is the start itself without a trial."""
    return trial_end_ms(start_ms, trial_days)


def _period_start_ms(anchor_ms: int, months_per_period: int, index: int) -> int:
    start_ms = add_months_anchored(anchor_ms, months_per_period * index)
    _check_time(start_ms, f"start of period {index}")
    return start_ms


def period_bounds(
    anchor_ms: int, interval: Interval, interval_count: int, index: int
) -> tuple[int, int]:
    """(start_ms, end_ms) of period `index` (0-based) of a cycle anchored at `anchor_ms`."""
    _check_time(anchor_ms, "anchor_ms")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError("period index must be a non-negative int")
    months = _months_per_period(interval, interval_count)
    start_ms = _period_start_ms(anchor_ms, months, index)
    end_ms = _period_start_ms(anchor_ms, months, index + 1)
    assert start_ms < end_ms, "periods move strictly forward"
    return start_ms, end_ms


def period_index_at(
    anchor_ms: int, interval: Interval, interval_count: int, at_ms: int
) -> int | None:
    """Index of the period containing `at_ms`, or None when `at_ms` precedes period 0 (trial)."""
    _check_time(anchor_ms, "anchor_ms")
    _check_time(at_ms, "at_ms")
    if at_ms < anchor_ms:
        return None
    months = _months_per_period(interval, interval_count)
    anchor_year, anchor_month, _, _ = civil_from_ms(anchor_ms)
    at_year, at_month, _, _ = civil_from_ms(at_ms)
    month_diff = (at_year * 12 + at_month) - (anchor_year * 12 + anchor_month)
    # The calendar month difference is within one period of the answer; fix it up exactly.
    index = max(0, month_diff // months)
    while index > 0 and _period_start_ms(anchor_ms, months, index) > at_ms:
        index -= 1
    while add_months_anchored(anchor_ms, months * (index + 1)) <= at_ms:
        index += 1
    return index


def period_at(anchor_ms: int, interval: Interval, interval_count: int, at_ms: int) -> Period | None:
    """The period containing `at_ms`, or None before period 0."""
    index = period_index_at(anchor_ms, interval, interval_count, at_ms)
    if index is None:
        return None
    start_ms, end_ms = period_bounds(anchor_ms, interval, interval_count, index)
    assert start_ms <= at_ms < end_ms, "the found period contains the instant"
    return Period(index, start_ms, end_ms)


def periods_ending_by(
    anchor_ms: int,
    interval: Interval,
    interval_count: int,
    as_of_ms: int,
    limit: int = MAX_PERIODS_PER_CALL,
    *,
    from_index: int = 0,
) -> list[Period]:
    """Periods with index >= from_index whose end is <= as_of_ms, oldest first, at most `limit`.

    These are the periods a billing run as of `as_of_ms` may invoice (a period ending exactly at
    as_of_ms is complete). Page through a long backlog by passing the last index + 1 as from_index.
    """
    _check_time(anchor_ms, "anchor_ms")
    _check_time(as_of_ms, "as_of_ms")
    if isinstance(limit, bool) or not 1 <= limit <= MAX_PERIODS_PER_CALL:
        raise ValueError(f"limit must be 1..{MAX_PERIODS_PER_CALL}")
    if isinstance(from_index, bool) or from_index < 0:
        raise ValueError("from_index must be a non-negative int")
    months = _months_per_period(interval, interval_count)
    periods: list[Period] = []
    index = from_index
    start_ms = _period_start_ms(anchor_ms, months, index)
    while len(periods) < limit:
        end_ms = add_months_anchored(anchor_ms, months * (index + 1))
        if end_ms > as_of_ms:
            break
        periods.append(Period(index, start_ms, end_ms))
        index, start_ms = index + 1, end_ms
    return periods
