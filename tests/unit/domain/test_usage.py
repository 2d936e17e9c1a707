"""Usage event validation, timestamps, fingerprints and batch handling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billkeep.domain.errors import ValidationFailed
from billkeep.domain.usage import (
    MAX_EVENTS_PER_BATCH,
    MAX_FUTURE_SKEW_MS,
    MAX_PROPERTIES,
    MAX_PROPERTIES_BYTES,
    MAX_PROPERTY_STRING_LENGTH,
    REJECT_EVENT_ID_REUSED,
    REJECT_INVALID_EVENT,
    REJECT_INVALID_EVENT_ID,
    REJECT_INVALID_METRIC,
    REJECT_INVALID_PROPERTIES,
    REJECT_INVALID_SUBJECT,
    REJECT_INVALID_TIMESTAMP,
    REJECT_TIMESTAMP_IN_FUTURE,
    RejectedEvent,
    Rejection,
    UsageEvent,
    check_event_id_reuse,
    parse_rfc3339_ms,
    validate_usage_batch,
    validate_usage_event,
)

NOW_MS = 1_769_860_800_000  # 2026-01-31T12:00:00Z


def event(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": "evt-0001",
        "customer_id": "cus_01HZY",
        "metric": "api_calls",
        "timestamp": "2026-01-31T11:00:00Z",
        "properties": {"calls": 3, "region": "eu"},
    }
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not ...}


def accepted(item: Any, now_ms: int = NOW_MS) -> UsageEvent:
    result = validate_usage_event(item, now_ms)
    assert isinstance(result, UsageEvent), result
    return result


def rejected_code(item: Any, now_ms: int = NOW_MS) -> str:
    result = validate_usage_event(item, now_ms)
    assert isinstance(result, Rejection), result
    assert result.detail
    return result.code


# --- a valid event -------------------------------------------------------------------------------


def test_valid_event_is_normalized() -> None:
    normalized = accepted(event())
    assert normalized.event_id == "evt-0001"
    assert (normalized.customer_id, normalized.subscription_id) == ("cus_01HZY", None)
    assert normalized.metric == "api_calls"
    assert normalized.timestamp_ms == NOW_MS - 3_600_000
    assert dict(normalized.properties) == {"calls": 3, "region": "eu"}
    assert len(normalized.fingerprint) == 64
    with pytest.raises(TypeError):
        normalized.properties["calls"] = 4  # type: ignore[index]


def test_subscription_subject_and_missing_properties() -> None:
    normalized = accepted(event(customer_id=..., subscription_id="sub_1", properties=...))
    assert (normalized.customer_id, normalized.subscription_id) == (None, "sub_1")
    assert dict(normalized.properties) == {}


# --- rejections with codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "code"),
    [
        ("not an object", REJECT_INVALID_EVENT),
        (event(amount=5), REJECT_INVALID_EVENT),
        (event(event_id=...), REJECT_INVALID_EVENT_ID),
        (event(event_id=""), REJECT_INVALID_EVENT_ID),
        (event(event_id="has space"), REJECT_INVALID_EVENT_ID),
        (event(event_id="é"), REJECT_INVALID_EVENT_ID),
        (event(event_id="x" * 256), REJECT_INVALID_EVENT_ID),
        (event(event_id=12), REJECT_INVALID_EVENT_ID),
        (event(customer_id=...), REJECT_INVALID_SUBJECT),
        (event(subscription_id="sub_1"), REJECT_INVALID_SUBJECT),
        (event(customer_id=""), REJECT_INVALID_SUBJECT),
        (event(customer_id=7), REJECT_INVALID_SUBJECT),
        (event(metric=...), REJECT_INVALID_METRIC),
        (event(metric="api calls"), REJECT_INVALID_METRIC),
        (event(timestamp=...), REJECT_INVALID_TIMESTAMP),
        (event(timestamp="2026-01-31T11:00:00"), REJECT_INVALID_TIMESTAMP),
        (event(timestamp="2026-02-30T00:00:00Z"), REJECT_INVALID_TIMESTAMP),
        (event(timestamp="1969-12-31T23:59:59Z"), REJECT_INVALID_TIMESTAMP),
        (event(timestamp=NOW_MS), REJECT_INVALID_TIMESTAMP),
        (event(properties=[1]), REJECT_INVALID_PROPERTIES),
        (event(properties={"nested": {"a": 1}}), REJECT_INVALID_PROPERTIES),
        (event(properties={"list": [1]}), REJECT_INVALID_PROPERTIES),
        (event(properties={"x": float("nan")}), REJECT_INVALID_PROPERTIES),
        (event(properties={"x": 2**63}), REJECT_INVALID_PROPERTIES),
        (event(properties={"": 1}), REJECT_INVALID_PROPERTIES),
        (
            event(properties={"s": "x" * (MAX_PROPERTY_STRING_LENGTH + 1)}),
            REJECT_INVALID_PROPERTIES,
        ),
        (
            event(properties={f"k{i}": 1 for i in range(MAX_PROPERTIES + 1)}),
            REJECT_INVALID_PROPERTIES,
        ),
        (event(properties={f"k{i}": "x" * 1000 for i in range(9)}), REJECT_INVALID_PROPERTIES),
    ],
)
def test_invalid_events_are_rejected_with_a_stable_code(item: Any, code: str) -> None:
    assert rejected_code(item) == code


def test_properties_at_their_limits_are_accepted() -> None:
    many = {f"k{i}": 1 for i in range(MAX_PROPERTIES)}
    assert len(accepted(event(properties=many)).properties) == MAX_PROPERTIES
    scalars = {"s": "x" * MAX_PROPERTY_STRING_LENGTH, "b": True, "n": None, "f": 1.5, "i": -(2**63)}
    assert accepted(event(properties=scalars)).properties["i"] == -(2**63)
    assert MAX_PROPERTIES_BYTES >= MAX_PROPERTY_STRING_LENGTH


def test_future_limit_is_exactly_five_minutes() -> None:
    at_limit = NOW_MS + MAX_FUTURE_SKEW_MS
    assert MAX_FUTURE_SKEW_MS == 300_000
    stamp = datetime.fromtimestamp(at_limit / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    assert accepted(event(timestamp=stamp + "Z")).timestamp_ms == at_limit
    later = datetime.fromtimestamp((at_limit + 1) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    assert rejected_code(event(timestamp=later[:-3] + "Z")) == REJECT_TIMESTAMP_IN_FUTURE
    # Old events are fine: they may arrive late.
    assert accepted(event(timestamp="2020-01-01T00:00:00Z")).timestamp_ms < NOW_MS


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("2026-01-31T12:00:00Z", NOW_MS),
        ("2026-01-31T12:00:00z", NOW_MS),
        ("2026-01-31t12:00:00Z", NOW_MS),
        ("2026-01-31T13:30:00+01:30", NOW_MS),
        ("2026-01-31T11:59:00-00:01", NOW_MS),
        ("2026-01-31T12:00:00.5Z", NOW_MS + 500),
        ("2026-01-31T12:00:00.123999999Z", NOW_MS + 123),  # truncated, never rounded up
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_rfc3339_parses_exactly(text: str, expected_ms: int) -> None:
    assert parse_rfc3339_ms(text) == expected_ms


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-31T12:00:00",
        "2026-01-31 12:00:00Z",
        "2026-01-31",
        "2026-01-31T12:00Z",
        "2026-13-01T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-01-31T24:00:00Z",
        "2026-01-31T12:60:00Z",
        "2026-01-31T12:00:60Z",
        "2026-01-31T12:00:00+24:00",
        "2026-01-31T12:00:00+0100",
        "2026-01-31T12:00:00.Z",
        "2026-01-31T12:00:00.1234567890Z",
        "\uff12\uff10\uff12\uff16-01-31T12:00:00Z",  # full-width digits
        " 2026-01-31T12:00:00Z",
    ],
)
def test_rfc3339_refuses_other_forms(text: str) -> None:
    assert parse_rfc3339_ms(text) is None


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)))
def test_rfc3339_agrees_with_datetime(moment: datetime) -> None:
    aware = moment.replace(tzinfo=UTC)
    expected_ms = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse_rfc3339_ms(aware.isoformat().replace("+00:00", "Z")) == expected_ms


# --- fingerprints --------------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_and_offset_notation() -> None:
    first = accepted(event(properties={"a": 1, "b": "x"}))
    reordered = accepted(
        {
            "properties": {"b": "x", "a": 1},
            "timestamp": "2026-01-31T12:00:00+01:00",
            "metric": "api_calls",
            "customer_id": "cus_01HZY",
            "event_id": "evt-0001",
        }
    )
    assert first.fingerprint == reordered.fingerprint
    assert check_event_id_reuse(first.fingerprint, reordered) is None


@pytest.mark.parametrize(
    "change",
    [
        {"properties": {"calls": 4, "region": "eu"}},
        {"properties": {"calls": 3.0, "region": "eu"}},
        {"properties": {"calls": "3", "region": "eu"}},
        {"metric": "other"},
        {"timestamp": "2026-01-31T11:00:00.001Z"},
        {"customer_id": "cus_other"},
        {"customer_id": ..., "subscription_id": "cus_01HZY"},
    ],
)
def test_any_content_change_is_event_id_reused(change: dict[str, Any]) -> None:
    original = accepted(event())
    changed = accepted(event(**change))
    assert changed.fingerprint != original.fingerprint
    rejection = check_event_id_reuse(original.fingerprint, changed)
    assert rejection is not None
    assert rejection.code == REJECT_EVENT_ID_REUSED


# --- batches -------------------------------------------------------------------------------------


def test_batch_separates_accepted_duplicates_and_rejections() -> None:
    body = {
        "events": [
            event(event_id="a"),
            event(event_id="b", timestamp="nope"),
            event(event_id="a"),  # exact repeat: duplicate
            event(event_id="a", properties={"calls": 9}),  # same id, other content
            event(event_id="c"),
            42,
        ]
    }
    batch = validate_usage_batch(body, NOW_MS)
    assert [(index, e.event_id) for index, e in batch.events] == [(0, "a"), (4, "c")]
    assert batch.duplicate_indexes == (2,)
    assert [(r.index, r.event_id, r.code) for r in batch.rejected] == [
        (1, "b", REJECT_INVALID_TIMESTAMP),
        (3, "a", REJECT_EVENT_ID_REUSED),
        (5, None, REJECT_INVALID_EVENT),
    ]
    assert all(isinstance(r, RejectedEvent) and r.detail for r in batch.rejected)


def test_a_rejected_first_occurrence_does_not_block_a_valid_later_one() -> None:
    body = {"events": [event(event_id="a", metric="bad metric"), event(event_id="a")]}
    batch = validate_usage_batch(body, NOW_MS)
    assert [index for index, _ in batch.events] == [1]
    assert [r.code for r in batch.rejected] == [REJECT_INVALID_METRIC]


def test_empty_batch_is_valid() -> None:
    batch = validate_usage_batch({"events": []}, NOW_MS)
    assert (batch.events, batch.duplicate_indexes, batch.rejected) == ((), (), ())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "events"),
        ({"events": {}}, "events"),
        ({"events": [event()] * (MAX_EVENTS_PER_BATCH + 1)}, "events"),
        ({"events": [], "extra": 1}, "extra"),
    ],
)
def test_malformed_batch_is_a_validation_error_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_usage_batch(body, NOW_MS)
    assert [e.field for e in caught.value.errors] == [field]


def test_a_full_batch_is_accepted() -> None:
    body = {"events": [event(event_id=f"e{i}") for i in range(MAX_EVENTS_PER_BATCH)]}
    assert len(validate_usage_batch(body, NOW_MS).events) == MAX_EVENTS_PER_BATCH
