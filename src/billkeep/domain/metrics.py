"""Billable metrics: definitions and order-independent aggregation of usage events.

Aggregations:
- `count`: number of events (no property; giving one is refused so nobody believes it counts
  distinct values -- that is `unique_count`).
- `sum`: sum of an integer property.
- `max`: largest value of an integer property (0 over no events).
- `unique_count`: number of distinct values of a scalar property.

Every aggregation is a commutative monoid (sum, max, set union), so an `Aggregator` fed the same
events in any order -- late events, retried batches split differently, partial aggregates
merged -- reports the same result. Deduplication by event_id is NOT done here: ingestion stores
each event_id once per tenant (see usage.py), and the billing run feeds each stored event once.

Quantities are integers: usage measured in fractions (GB, hours) must be reported in integer
units of the metric (MB, seconds) so no float ever reaches money.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from billkeep.domain.errors import FieldError, ValidationFailed

__all__ = [
    "AGGREGATIONS",
    "MAX_METRIC_NAME_LENGTH",
    "MAX_PROPERTY_VALUE",
    "METRIC_CODE_MAX_LENGTH",
    "PROPERTY_NAME_MAX_LENGTH",
    "REJECT_PROPERTY_MISSING",
    "REJECT_PROPERTY_NOT_INTEGER",
    "REJECT_PROPERTY_NOT_SCALAR",
    "REJECT_PROPERTY_OUT_OF_RANGE",
    "Aggregation",
    "Aggregator",
    "MetricDefinition",
    "Rejection",
    "aggregate",
    "canonical_scalar",
    "extract_value",
    "is_metric_code",
    "is_property_name",
    "parse_metric",
    "parse_metric_code",
]

Aggregation = Literal["sum", "count", "max", "unique_count"]
AGGREGATIONS: tuple[Aggregation, ...] = ("sum", "count", "max", "unique_count")

_T = TypeVar("_T")

METRIC_CODE_MAX_LENGTH = 64
PROPERTY_NAME_MAX_LENGTH = 64
MAX_METRIC_NAME_LENGTH = 200
# One event's contribution to sum/max: as large as any amount may be, so value * unit price
# overflows visibly in pricing instead of silently in a 64-bit column.
MAX_PROPERTY_VALUE = 10**15

# Codes are identifiers that appear in URLs, logs and invoice lines: a conservative alphabet.
_CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_PROPERTY_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")

# Per-event rejection codes (reported in `rejected[].code`, never raised).
REJECT_PROPERTY_MISSING = "property_missing"
REJECT_PROPERTY_NOT_INTEGER = "property_not_integer"
REJECT_PROPERTY_OUT_OF_RANGE = "property_out_of_range"
REJECT_PROPERTY_NOT_SCALAR = "property_not_scalar"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one usage event was refused: a stable machine code and a human detail."""

    code: str
    detail: str


def is_metric_code(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= METRIC_CODE_MAX_LENGTH
        and _CODE_PATTERN.fullmatch(value) is not None
    )


def is_property_name(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= PROPERTY_NAME_MAX_LENGTH
        and _PROPERTY_PATTERN.fullmatch(value) is not None
    )


def parse_metric_code(value: Any, field: str = "code") -> str:
    if not is_metric_code(value):
        raise ValidationFailed.single(
            field,
            f"must be 1..{METRIC_CODE_MAX_LENGTH} characters of A-Z a-z 0-9 _ . : - "
            "starting with a letter or digit",
        )
    assert isinstance(value, str)
    return value


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    code: str
    name: str
    aggregation: Aggregation
    property: str | None

    def __post_init__(self) -> None:
        assert self.aggregation in AGGREGATIONS, "unknown aggregation"
        assert (self.property is None) == (self.aggregation == "count"), (
            "count takes no property; every other aggregation needs one"
        )


def _parse_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_METRIC_NAME_LENGTH:
        raise ValidationFailed.single(
            field, f"must be a non-blank string of at most {MAX_METRIC_NAME_LENGTH} characters"
        )
    return value


def _parse_aggregation(value: Any, field: str) -> Aggregation:
    for aggregation in AGGREGATIONS:
        if value == aggregation:
            return aggregation
    raise ValidationFailed.single(field, f"must be one of {', '.join(AGGREGATIONS)}")


def _parse_property(value: Any, aggregation: Aggregation, field: str) -> str | None:
    if aggregation == "count":
        if value is not None:
            raise ValidationFailed.single(field, "must be omitted for count (use unique_count)")
        return None
    if value is None:
        raise ValidationFailed.single(field, "is required for sum, max and unique_count")
    if not is_property_name(value):
        raise ValidationFailed.single(
            field, f"must be 1..{PROPERTY_NAME_MAX_LENGTH} characters of A-Z a-z 0-9 _ . : -"
        )
    assert isinstance(value, str)
    return value


def _collecting(errors: list[FieldError], parse: Callable[[], _T]) -> _T | None:
    """Run one field's parser, recording its errors so every bad field is reported at once."""
    try:
        return parse()
    except ValidationFailed as exc:
        errors.extend(exc.errors)
        return None


def parse_metric(body: Any, field_prefix: str = "") -> MetricDefinition:
    """A metric from the `POST /v1/metrics` body; every invalid field is reported at once."""
    if not isinstance(body, Mapping):
        raise ValidationFailed.single(field_prefix or "body", "must be a JSON object")
    errors: list[FieldError] = []
    code = _collecting(errors, lambda: parse_metric_code(body.get("code"), f"{field_prefix}code"))
    name = _collecting(errors, lambda: _parse_name(body.get("name"), f"{field_prefix}name"))
    aggregation = _collecting(
        errors,
        lambda: _parse_aggregation(body.get("aggregation"), f"{field_prefix}aggregation"),
    )
    prop: str | None = None
    if aggregation is not None:
        prop = _collecting(
            errors,
            lambda: _parse_property(body.get("property"), aggregation, f"{field_prefix}property"),
        )
    if errors:
        raise ValidationFailed(errors)
    assert code is not None and name is not None and aggregation is not None
    return MetricDefinition(code=code, name=name, aggregation=aggregation, property=prop)


# --- per-event value extraction ------------------------------------------------------------


def canonical_scalar(value: Any) -> str | None:
    """A canonical text for a JSON scalar (None when it is not a non-null scalar).

    Type-tagged so that "1", 1 and true stay distinct values; an integral float (1.0) is the same
    JSON number as 1, so it canonicalizes to the integer. Strings compare by exact code points.
    """
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if isinstance(value, int):
        return f"n:{value}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None  # NaN/Infinity are not JSON numbers
        if value.is_integer():
            return f"n:{int(value)}"
        return f"n:{value!r}"
    if isinstance(value, str):
        return "s:" + json.dumps(value, ensure_ascii=False)
    return None


def _extract_integer(properties: Mapping[str, Any], name: str) -> int | Rejection:
    value = properties[name]
    # bool is an int subclass: `true` must not count as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        return Rejection(
            REJECT_PROPERTY_NOT_INTEGER,
            f"property {name!r} must be an integer (got {type(value).__name__}); report "
            "fractional usage in integer units of the metric",
        )
    if not 0 <= value <= MAX_PROPERTY_VALUE:
        return Rejection(
            REJECT_PROPERTY_OUT_OF_RANGE, f"property {name!r} must be 0..{MAX_PROPERTY_VALUE}"
        )
    return value


def extract_value(metric: MetricDefinition, properties: Mapping[str, Any]) -> int | str | Rejection:
    """What one event contributes: 1 for count, the integer for sum/max, the canonical scalar
    for unique_count; or a Rejection saying why the event cannot be billed for this metric."""
    if metric.aggregation == "count":
        return 1
    assert metric.property is not None
    if metric.property not in properties or properties[metric.property] is None:
        return Rejection(REJECT_PROPERTY_MISSING, f"property {metric.property!r} is required")
    if metric.aggregation == "unique_count":
        canonical = canonical_scalar(properties[metric.property])
        if canonical is None:
            return Rejection(
                REJECT_PROPERTY_NOT_SCALAR,
                f"property {metric.property!r} must be a string, number or boolean",
            )
        return canonical
    return _extract_integer(properties, metric.property)


# --- aggregation ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Aggregator:
    """Streaming aggregate of one metric over a set of events (e.g. one subscription period).

    `add` events in any order and `merge` partial aggregates in any grouping: the result only
    depends on the multiset of accepted events. Rejected events change nothing.
    """

    metric: MetricDefinition
    events_accepted: int = 0
    _total: int = 0
    _maximum: int = 0
    _distinct: set[str] = field(default_factory=set)

    def add(self, properties: Mapping[str, Any]) -> Rejection | None:
        value = extract_value(self.metric, properties)
        if isinstance(value, Rejection):
            return value
        self.events_accepted += 1
        if isinstance(value, str):
            self._distinct.add(value)
        else:
            self._total += value
            self._maximum = max(self._maximum, value)
        return None

    def merge(self, other: Aggregator) -> None:
        if other.metric != self.metric:
            raise ValueError("cannot merge aggregates of different metrics")
        self.events_accepted += other.events_accepted
        self._total += other._total
        self._maximum = max(self._maximum, other._maximum)
        self._distinct |= other._distinct

    def result(self) -> int:
        """The billable quantity."""
        aggregation = self.metric.aggregation
        if aggregation == "count":
            assert self._total == self.events_accepted, "count contributes 1 per event"
            return self.events_accepted
        if aggregation == "sum":
            return self._total
        if aggregation == "max":
            return self._maximum
        return len(self._distinct)


def aggregate(
    metric: MetricDefinition, events_properties: Iterable[Mapping[str, Any]]
) -> tuple[int, list[tuple[int, Rejection]]]:
    """(quantity, [(position, rejection)]) over an iterable of event property objects."""
    aggregator = Aggregator(metric)
    rejections: list[tuple[int, Rejection]] = []
    for position, properties in enumerate(events_properties):
        rejection = aggregator.add(properties)
        if rejection is not None:
            rejections.append((position, rejection))
    return aggregator.result(), rejections
