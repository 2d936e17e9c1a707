"""Validation of usage events (`POST /v1/usage_events`) and their content fingerprints.

One bad event never fails the batch: each item becomes either a normalized `UsageEvent` or a
`Rejection(code, detail)` reported as `rejected[{index, event_id, code, detail}]`. Only a malformed
batch envelope (not an object, `events` not an array, more than MAX_EVENTS_PER_BATCH items) is a
422 ValidationFailed.

`event_id` is unique per tenant forever (invariant I9: each event counts once). The fingerprint --
SHA-256 of the canonical JSON (sorted keys, compact) of the NORMALIZED content -- tells a harmless
retry (same id, same content: a duplicate) from a conflicting reuse (same id, other content:
`event_id_reused`). Normalizing first means the same instant written with another UTC offset, or
the same properties in another key order, is the same event.

Documented choices:
- Timestamps are RFC 3339 with a mandatory offset (`Z` or +hh:mm); fractional seconds are
  truncated to whole milliseconds (billkeep's time resolution); leap seconds (:60) are refused.
- `properties` is optional (defaults to {}) and holds JSON scalars only (string, number, boolean,
  null), bounded in count and size; nesting is refused because no aggregation reads it.
- `customer_id` / `subscription_id` are checked for shape (1..255 visible ASCII) only; whether they
  exist is for the store to answer.
- Unknown keys in an event are refused, so a misspelt field is not silently dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from billkeep.domain.errors import ValidationFailed
from billkeep.domain.fingerprint import canonical_json, fingerprint
from billkeep.domain.metrics import Rejection, is_metric_code
from billkeep.domain.periods import MS_PER_DAY, days_in_month, ms_from_civil

__all__ = [
    "MAX_EVENTS_PER_BATCH",
    "MAX_EVENT_ID_LENGTH",
    "MAX_FUTURE_SKEW_MS",
    "MAX_PROPERTIES",
    "MAX_PROPERTIES_BYTES",
    "MAX_PROPERTY_KEY_LENGTH",
    "MAX_PROPERTY_STRING_LENGTH",
    "MAX_SUBJECT_ID_LENGTH",
    "REJECT_EVENT_ID_REUSED",
    "REJECT_INVALID_EVENT",
    "REJECT_INVALID_EVENT_ID",
    "REJECT_INVALID_METRIC",
    "REJECT_INVALID_PROPERTIES",
    "REJECT_INVALID_SUBJECT",
    "REJECT_INVALID_TIMESTAMP",
    "REJECT_TIMESTAMP_IN_FUTURE",
    "JsonScalar",
    "RejectedEvent",
    "Rejection",
    "UsageBatch",
    "UsageEvent",
    "check_event_id_reuse",
    "event_fingerprint",
    "parse_rfc3339_ms",
    "validate_usage_batch",
    "validate_usage_event",
]

JsonScalar = str | int | float | bool | None

MAX_EVENTS_PER_BATCH = 1000
MAX_EVENT_ID_LENGTH = 255
MAX_SUBJECT_ID_LENGTH = 255
# Clocks disagree a little; an event further ahead than this is a client bug, and accepting it
# could bill usage into a period that has not happened yet.
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
MAX_PROPERTIES = 50
MAX_PROPERTY_KEY_LENGTH = 64
MAX_PROPERTY_STRING_LENGTH = 1024
MAX_PROPERTIES_BYTES = 8192
# Integers must fit a signed 64-bit column wherever a store keeps them.
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")

REJECT_INVALID_EVENT = "invalid_event"
REJECT_INVALID_EVENT_ID = "invalid_event_id"
REJECT_INVALID_SUBJECT = "invalid_subject"
REJECT_INVALID_METRIC = "invalid_metric"
REJECT_INVALID_TIMESTAMP = "invalid_timestamp"
REJECT_TIMESTAMP_IN_FUTURE = "timestamp_in_future"
REJECT_INVALID_PROPERTIES = "invalid_properties"
REJECT_EVENT_ID_REUSED = "event_id_reused"

_EVENT_KEYS = frozenset(
    {"event_id", "customer_id", "subscription_id", "metric", "timestamp", "properties"}
)
_BATCH_KEYS = frozenset({"events"})
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # without it \d also matches non-ASCII digits such as full-width ones
)
_MS_PER_MINUTE = 60_000


class _Reject(Exception):
    """Internal: one field of one event is bad; becomes a Rejection."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(code, detail)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """A validated, normalized usage event. Exactly one of customer_id / subscription_id is set."""

    event_id: str
    customer_id: str | None
    subscription_id: str | None
    metric: str
    timestamp_ms: int
    properties: Mapping[str, JsonScalar]
    fingerprint: str

    def __post_init__(self) -> None:
        assert (self.customer_id is None) != (self.subscription_id is None), "exactly one subject"


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """One entry of the response's `rejected` list."""

    index: int
    event_id: str | None
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class UsageBatch:
    """A validated batch: candidate events (first occurrence of each id, with its index), indexes
    of exact repeats inside the batch, and rejections. Every input index appears exactly once."""

    events: tuple[tuple[int, UsageEvent], ...]
    duplicate_indexes: tuple[int, ...]
    rejected: tuple[RejectedEvent, ...]


# --- timestamps ----------------------------------------------------------------------------


def parse_rfc3339_ms(value: Any) -> int | None:
    """Epoch milliseconds of an RFC 3339 date-time with offset, or None if it is not one.

    Pure integer arithmetic: no float rounding, and no leniency of datetime.fromisoformat (which
    also accepts offset-less and other ISO 8601 forms the contract does not allow).
    """
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction, zulu, sign, offset_hours, offset_minutes = match.group(7, 8, 9, 10, 11)
    if not 1 <= month <= 12 or not 1 <= day <= days_in_month(year, month):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset_ms = 0
    if zulu is None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return None
        offset_ms = (int(offset_hours) * 60 + int(offset_minutes)) * _MS_PER_MINUTE
        offset_ms = -offset_ms if sign == "-" else offset_ms
    millis = int((fraction or "0").ljust(3, "0")[:3])  # truncate below the millisecond
    ms_of_day = ((hour * 60 + minute) * 60 + second) * 1000 + millis
    assert 0 <= ms_of_day < MS_PER_DAY
    return ms_from_civil(year, month, day, ms_of_day) - offset_ms


# --- fields --------------------------------------------------------------------------------------


def _is_visible_ascii(value: Any, max_length: int) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= max_length
        and _VISIBLE_ASCII.fullmatch(value) is not None
    )


def _event_id(item: Mapping[str, Any]) -> str:
    value = item.get("event_id")
    if not _is_visible_ascii(value, MAX_EVENT_ID_LENGTH):
        raise _Reject(
            REJECT_INVALID_EVENT_ID,
            f"event_id must be 1..{MAX_EVENT_ID_LENGTH} visible ASCII characters",
        )
    assert isinstance(value, str)
    return value


def _subject(item: Mapping[str, Any]) -> tuple[str | None, str | None]:
    customer_id = item.get("customer_id")
    subscription_id = item.get("subscription_id")
    if (customer_id is None) == (subscription_id is None):
        raise _Reject(
            REJECT_INVALID_SUBJECT, "exactly one of customer_id and subscription_id is required"
        )
    for name, value in (("customer_id", customer_id), ("subscription_id", subscription_id)):
        if value is not None and not _is_visible_ascii(value, MAX_SUBJECT_ID_LENGTH):
            raise _Reject(
                REJECT_INVALID_SUBJECT,
                f"{name} must be 1..{MAX_SUBJECT_ID_LENGTH} visible ASCII characters",
            )
    return customer_id, subscription_id


def _metric(item: Mapping[str, Any]) -> str:
    value = item.get("metric")
    if not is_metric_code(value):
        raise _Reject(REJECT_INVALID_METRIC, "metric must be a metric code")
    assert isinstance(value, str)
    return value


def _timestamp_ms(item: Mapping[str, Any], now_ms: int) -> int:
    timestamp_ms = parse_rfc3339_ms(item.get("timestamp"))
    if timestamp_ms is None:
        raise _Reject(
            REJECT_INVALID_TIMESTAMP,
            "timestamp must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z",
        )
    if timestamp_ms < 0:
        raise _Reject(REJECT_INVALID_TIMESTAMP, "timestamp must not precede 1970-01-01T00:00:00Z")
    if timestamp_ms > now_ms + MAX_FUTURE_SKEW_MS:
        raise _Reject(
            REJECT_TIMESTAMP_IN_FUTURE,
            f"timestamp is more than {MAX_FUTURE_SKEW_MS // _MS_PER_MINUTE} minutes in the future",
        )
    return timestamp_ms


def _property_value_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if _INT64_MIN <= value <= _INT64_MAX else "integer out of 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "NaN and Infinity are not JSON numbers"
    if isinstance(value, str):
        too_long = len(value) > MAX_PROPERTY_STRING_LENGTH
        return f"string longer than {MAX_PROPERTY_STRING_LENGTH}" if too_long else None
    return "must be a string, number, boolean or null (no objects or arrays)"


def _properties(item: Mapping[str, Any]) -> dict[str, JsonScalar]:
    value = item.get("properties", {})
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise _Reject(REJECT_INVALID_PROPERTIES, "properties must be a JSON object")
    if len(value) > MAX_PROPERTIES:
        raise _Reject(REJECT_INVALID_PROPERTIES, f"at most {MAX_PROPERTIES} properties")
    for key in sorted(value, key=str):
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_PROPERTY_KEY_LENGTH:
            raise _Reject(
                REJECT_INVALID_PROPERTIES,
                f"property names must be 1..{MAX_PROPERTY_KEY_LENGTH} characters",
            )
        problem = _property_value_problem(value[key])
        if problem is not None:
            raise _Reject(REJECT_INVALID_PROPERTIES, f"properties.{key}: {problem}")
    properties: dict[str, JsonScalar] = dict(value)
    if len(canonical_json(properties).encode("utf-8")) > MAX_PROPERTIES_BYTES:
        raise _Reject(
            REJECT_INVALID_PROPERTIES, f"properties exceed {MAX_PROPERTIES_BYTES} bytes as JSON"
        )
    return properties


# --- events --------------------------------------------------------------------------------------


def event_fingerprint(
    event_id: str,
    customer_id: str | None,
    subscription_id: str | None,
    metric: str,
    timestamp_ms: int,
    properties: Mapping[str, JsonScalar],
) -> str:
    """SHA-256 hex of the canonical JSON of an event's normalized content."""
    assert (customer_id is None) != (subscription_id is None), "exactly one subject"
    # Only the subject actually given is part of the content, under its own key.
    subject_key = "customer_id" if customer_id is not None else "subscription_id"
    content = {
        "event_id": event_id,
        subject_key: customer_id if customer_id is not None else subscription_id,
        "metric": metric,
        "timestamp_ms": timestamp_ms,
        "properties": dict(properties),
    }
    return fingerprint(content)


def validate_usage_event(item: Any, now_ms: int) -> UsageEvent | Rejection:
    """A normalized event, or the first reason it cannot be accepted."""
    if not isinstance(item, Mapping):
        return Rejection(REJECT_INVALID_EVENT, "each event must be a JSON object")
    unknown = sorted(str(key) for key in item if key not in _EVENT_KEYS)
    if unknown:
        return Rejection(REJECT_INVALID_EVENT, f"unknown field(s): {', '.join(unknown)}")
    try:
        event_id = _event_id(item)
        customer_id, subscription_id = _subject(item)
        metric = _metric(item)
        timestamp_ms = _timestamp_ms(item, now_ms)
        properties = _properties(item)
    except _Reject as reject:
        return reject.rejection
    digest = event_fingerprint(
        event_id, customer_id, subscription_id, metric, timestamp_ms, properties
    )
    return UsageEvent(
        event_id=event_id,
        customer_id=customer_id,
        subscription_id=subscription_id,
        metric=metric,
        timestamp_ms=timestamp_ms,
        properties=MappingProxyType(properties),
        fingerprint=digest,
    )


def check_event_id_reuse(stored_fingerprint: str, event: UsageEvent) -> Rejection | None:
    """For an event_id already stored: None when this is the same event again (a duplicate to
    acknowledge without counting twice), an `event_id_reused` Rejection when the content differs."""
    if stored_fingerprint == event.fingerprint:
        return None
    return Rejection(
        REJECT_EVENT_ID_REUSED, f"event_id {event.event_id!r} was already used for another event"
    )


def _raw_event_id(item: Any) -> str | None:
    if isinstance(item, Mapping) and isinstance(item.get("event_id"), str):
        return str(item["event_id"])
    return None


def _batch_items(body: Any) -> list[Any]:
    if not isinstance(body, Mapping):
        raise ValidationFailed.single("body", "must be a JSON object")
    unknown = sorted(str(key) for key in body if key not in _BATCH_KEYS)
    if unknown:
        raise ValidationFailed.single(unknown[0], "unknown field")
    items = body.get("events")
    if not isinstance(items, list):
        raise ValidationFailed.single("events", "must be a JSON array")
    if len(items) > MAX_EVENTS_PER_BATCH:
        raise ValidationFailed.single("events", f"must have at most {MAX_EVENTS_PER_BATCH} items")
    return items


def validate_usage_batch(body: Any, now_ms: int) -> UsageBatch:
    """Validate a whole `POST /v1/usage_events` body.

    Within the batch, the first occurrence of an event_id is the candidate; a later identical one
    is a duplicate, a later different one is rejected as `event_id_reused`. Candidates must still be
    checked against stored events with check_event_id_reuse.
    """
    items = _batch_items(body)
    accepted: list[tuple[int, UsageEvent]] = []
    first_by_id: dict[str, UsageEvent] = {}
    duplicates: list[int] = []
    rejected: list[RejectedEvent] = []
    for index, item in enumerate(items):
        result = validate_usage_event(item, now_ms)
        if isinstance(result, UsageEvent) and result.event_id in first_by_id:
            reuse = check_event_id_reuse(first_by_id[result.event_id].fingerprint, result)
            if reuse is None:
                duplicates.append(index)
                continue
            result = reuse
        if isinstance(result, Rejection):
            rejected.append(RejectedEvent(index, _raw_event_id(item), result.code, result.detail))
            continue
        first_by_id[result.event_id] = result
        accepted.append((index, result))
    assert len(accepted) + len(duplicates) + len(rejected) == len(items), "each item counted once"
    return UsageBatch(tuple(accepted), tuple(duplicates), tuple(rejected))
