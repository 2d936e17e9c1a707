"""Metric definitions and order-independent aggregation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billkeep.domain.errors import ValidationFailed
from billkeep.domain.metrics import (
    MAX_PROPERTY_VALUE,
    REJECT_PROPERTY_MISSING,
    REJECT_PROPERTY_NOT_INTEGER,
    REJECT_PROPERTY_NOT_SCALAR,
    REJECT_PROPERTY_OUT_OF_RANGE,
    Aggregator,
    MetricDefinition,
    Rejection,
    aggregate,
    canonical_scalar,
    parse_metric,
)

SUM = MetricDefinition("api_calls", "API calls", "sum", "calls")
MAX = MetricDefinition("seats", "Seats", "max", "seats")
COUNT = MetricDefinition("logins", "Logins", "count", None)
UNIQUE = MetricDefinition("mau", "Monthly active users", "unique_count", "user")


# --- definitions ---------------------------------------------------------------------------------


def test_parse_metric_accepts_each_aggregation() -> None:
    assert parse_metric({"code": "logins", "name": "Logins", "aggregation": "count"}) == COUNT
    assert parse_metric(
        {"code": "mau", "name": "Monthly active users", "aggregation": "unique_count",
         "property": "user"}
    ) == UNIQUE  # fmt: skip


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"code": "", "name": "n", "aggregation": "count"}, ["code"]),
        ({"code": "a b", "name": "n", "aggregation": "count"}, ["code"]),
        ({"code": "x" * 65, "name": "n", "aggregation": "count"}, ["code"]),
        ({"code": "c", "name": " ", "aggregation": "count"}, ["name"]),
        ({"code": "c", "name": "n", "aggregation": "avg"}, ["aggregation"]),
        ({"code": "c", "name": "n", "aggregation": "sum"}, ["property"]),
        ({"code": "c", "name": "n", "aggregation": "max", "property": ""}, ["property"]),
        ({"code": "c", "name": "n", "aggregation": "count", "property": "p"}, ["property"]),
        ({"name": 5, "aggregation": "sum"}, ["code", "name", "property"]),
    ],
)
def test_invalid_metric_names_every_bad_field(body: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_metric(body)
    assert [e.field for e in caught.value.errors] == fields


def test_parse_metric_refuses_a_non_object() -> None:
    with pytest.raises(ValidationFailed):
        parse_metric(["code"])


# --- per-event values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "properties", "code"),
    [
        (SUM, {}, REJECT_PROPERTY_MISSING),
        (SUM, {"calls": None}, REJECT_PROPERTY_MISSING),
        (SUM, {"calls": 1.0}, REJECT_PROPERTY_NOT_INTEGER),
        (SUM, {"calls": 2.5}, REJECT_PROPERTY_NOT_INTEGER),
        (SUM, {"calls": True}, REJECT_PROPERTY_NOT_INTEGER),
        (SUM, {"calls": "3"}, REJECT_PROPERTY_NOT_INTEGER),
        (SUM, {"calls": -1}, REJECT_PROPERTY_OUT_OF_RANGE),
        (SUM, {"calls": MAX_PROPERTY_VALUE + 1}, REJECT_PROPERTY_OUT_OF_RANGE),
        (MAX, {"seats": False}, REJECT_PROPERTY_NOT_INTEGER),
        (UNIQUE, {"user": {"id": 1}}, REJECT_PROPERTY_NOT_SCALAR),
        (UNIQUE, {"user": [1]}, REJECT_PROPERTY_NOT_SCALAR),
        (UNIQUE, {"user": float("nan")}, REJECT_PROPERTY_NOT_SCALAR),
        (UNIQUE, {}, REJECT_PROPERTY_MISSING),
    ],
)
def test_bad_event_values_are_rejected_with_a_code_and_change_nothing(
    metric: MetricDefinition, properties: dict[str, Any], code: str
) -> None:
    aggregator = Aggregator(metric)
    rejection = aggregator.add(properties)
    assert isinstance(rejection, Rejection)
    assert rejection.code == code
    assert rejection.detail
    assert aggregator.events_accepted == 0
    assert aggregator.result() == 0


def test_each_aggregation_result() -> None:
    events: list[dict[str, Any]] = [
        {"calls": 3, "seats": 4, "user": "u1"},
        {"calls": 0, "seats": 9, "user": "u2"},
        {"calls": 7, "seats": 2, "user": "u1"},
    ]
    assert aggregate(SUM, events) == (10, [])
    assert aggregate(MAX, events) == (9, [])
    assert aggregate(COUNT, events) == (3, [])
    assert aggregate(UNIQUE, events) == (2, [])


def test_empty_period_aggregates_to_zero() -> None:
    for metric in (SUM, MAX, COUNT, UNIQUE):
        assert aggregate(metric, []) == (0, [])


def test_aggregate_reports_rejections_by_position() -> None:
    quantity, rejections = aggregate(SUM, [{"calls": 1}, {"calls": 1.5}, {"calls": 2}])
    assert quantity == 3
    assert [(position, r.code) for position, r in rejections] == [(1, REJECT_PROPERTY_NOT_INTEGER)]


def test_count_ignores_properties() -> None:
    assert aggregate(COUNT, [{}, {"anything": [1, 2]}]) == (2, [])


def test_unique_count_canonicalizes_numbers_but_keeps_types_apart() -> None:
    events: list[dict[str, Any]] = [
        {"user": 1}, {"user": 1.0}, {"user": "1"}, {"user": True}, {"user": 1.5},
    ]  # fmt: skip
    # 1 and 1.0 are the same JSON number; "1", true and 1.5 are different values.
    assert aggregate(UNIQUE, events) == (4, [])
    assert canonical_scalar(1) == canonical_scalar(1.0)
    assert len({canonical_scalar(v) for v in (1, "1", True, False, 0)}) == 5
    assert canonical_scalar(None) is None


def test_merge_refuses_another_metric() -> None:
    with pytest.raises(ValueError):
        Aggregator(SUM).merge(Aggregator(MAX))


# --- order independence --------------------------------------------------------------------------

scalar_values = st.one_of(
    st.integers(min_value=-5, max_value=5),
    st.text(max_size=3),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-3, max_value=3),
)
event_properties = st.fixed_dictionaries(
    {
        "calls": st.one_of(st.integers(min_value=0, max_value=MAX_PROPERTY_VALUE), st.floats()),
        "seats": st.integers(min_value=-2, max_value=1000),
        "user": scalar_values,
    }
)


@given(
    st.lists(event_properties, max_size=20).flatmap(
        lambda e: st.tuples(st.just(e), st.permutations(e))
    )
)
def test_any_permutation_gives_the_same_result(
    events_and_shuffled: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    events, shuffled = events_and_shuffled
    for metric in (SUM, MAX, COUNT, UNIQUE):
        quantity, rejections = aggregate(metric, events)
        shuffled_quantity, shuffled_rejections = aggregate(metric, shuffled)
        assert quantity == shuffled_quantity
        assert len(rejections) == len(shuffled_rejections)


@given(st.lists(event_properties, max_size=20), st.integers(min_value=0, max_value=20))
def test_merging_partial_aggregates_equals_one_pass(
    events: list[dict[str, Any]], split: int
) -> None:
    for metric in (SUM, MAX, COUNT, UNIQUE):
        whole = Aggregator(metric)
        left, right = Aggregator(metric), Aggregator(metric)
        for properties in events:
            whole.add(properties)
        for properties in events[:split]:
            left.add(properties)
        for properties in events[split:]:
            right.add(properties)
        right.merge(left)  # merge in the "wrong" order on purpose
        assert right.result() == whole.result()
        assert right.events_accepted == whole.events_accepted
