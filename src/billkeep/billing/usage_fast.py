"""A cheap validation path for usage batches, equivalent to `domain.usage.validate_usage_batch`.

Ingestion spends most of its CPU validating and fingerprinting events. The common event -- a
dict of known keys, visible-ASCII ids, a valid timestamp, a small object of scalar properties --
is checked here with plain type tests, its timestamp parsed once per distinct string in the batch,
and its canonical JSON written once: the properties text (stored as is) is embedded in the
fingerprinted content, which is assembled in canonical key order. Anything that fails a fast check
is handed to the domain validator, so every rejection (code and detail) is the domain's own; an
accepted event has exactly the fingerprint `domain.usage.event_fingerprint` gives (tested).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from billkeep.domain.fingerprint import canonical_json
from billkeep.domain.metrics import is_metric_code
from billkeep.domain.usage import (
    MAX_EVENT_ID_LENGTH,
    MAX_FUTURE_SKEW_MS,
    MAX_PROPERTIES,
    MAX_PROPERTIES_BYTES,
    MAX_PROPERTY_KEY_LENGTH,
    MAX_PROPERTY_STRING_LENGTH,
    MAX_SUBJECT_ID_LENGTH,
    RejectedEvent,
    Rejection,
    UsageBatch,
    UsageEvent,
    check_event_id_reuse,
    parse_rfc3339_ms,
    validate_usage_event,
)
from billkeep.domain.usage import _batch_items as batch_items  # the envelope rules, shared

__all__ = ["FastBatch", "fast_validate_batch", "properties_json"]

_EVENT_KEYS = frozenset(
    {"event_id", "customer_id", "subscription_id", "metric", "timestamp", "properties"}
)
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_VISIBLE_MATCH = _VISIBLE_ASCII.fullmatch
_encode_string = json.encoder.encode_basestring
# canonical_json's settings, built once: json.dumps with non-default options builds an encoder
# per call. Same output as domain.fingerprint.canonical_json (tested).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def properties_json(properties: Any) -> str:
    """The stored text of an event's properties: its canonical JSON."""
    return canonical_json(dict(properties))


@dataclass(frozen=True, slots=True)
class FastBatch:
    """A validated batch plus the canonical properties text of each candidate (by event_id)."""

    batch: UsageBatch
    properties_text: dict[str, str]


def _scalar_ok(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_PROPERTY_STRING_LENGTH
    if kind is int:
        return bool(_INT64_MIN <= value <= _INT64_MAX)
    if kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    return False


def _fast_properties(item: dict[str, Any]) -> str | None:
    """Canonical JSON of the properties, or None when the slow path must decide."""
    value = item.get("properties")
    if value is None:
        return "{}"
    if type(value) is not dict or len(value) > MAX_PROPERTIES:
        return None
    for key, scalar in value.items():
        if type(key) is not str or not 1 <= len(key) <= MAX_PROPERTY_KEY_LENGTH:
            return None
        if not _scalar_ok(scalar):
            return None
    text = _CANONICAL(value)
    if len(text) > MAX_PROPERTIES_BYTES and len(text.encode("utf-8")) > MAX_PROPERTIES_BYTES:
        return None
    return text


class _Validator:
    """Per-batch caches: timestamps and metric codes repeat a lot within a batch."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.latest_ms = now_ms + MAX_FUTURE_SKEW_MS
        self.timestamps: dict[Any, int | None] = {}
        self.metrics: dict[Any, bool] = {}

    def _timestamp_ms(self, value: Any) -> int | None:
        if type(value) is not str:
            return None
        if value not in self.timestamps:
            self.timestamps[value] = parse_rfc3339_ms(value)
        parsed = self.timestamps[value]
        if parsed is None or parsed < 0 or parsed > self.latest_ms:
            return None
        return parsed

    def _metric_ok(self, value: str) -> bool:
        known = self.metrics.get(value)
        if known is None:
            known = self.metrics[value] = is_metric_code(value)
        return known

    def fast(self, item: Any) -> tuple[UsageEvent, str] | None:
        """The event and its properties text, or None when the domain validator must decide."""
        if type(item) is not dict or not _EVENT_KEYS.issuperset(item):
            return None
        event_id = item.get("event_id")
        customer_id = item.get("customer_id")
        subscription_id = item.get("subscription_id")
        metric = item.get("metric")
        subject = customer_id if customer_id is not None else subscription_id
        # Inline type tests (not helpers): this runs for every event of every batch.
        if type(event_id) is not str or len(event_id) > MAX_EVENT_ID_LENGTH:
            return None
        if type(subject) is not str or len(subject) > MAX_SUBJECT_ID_LENGTH:
            return None
        if type(metric) is not str or not self._metric_ok(metric):
            return None
        if customer_id is not None and subscription_id is not None:
            return None
        if _VISIBLE_MATCH(event_id) is None or _VISIBLE_MATCH(subject) is None:
            return None
        timestamp_ms = self._timestamp_ms(item.get("timestamp"))
        if timestamp_ms is None:
            return None
        props_text = _fast_properties(item)
        if props_text is None:
            return None
        # The canonical JSON of event_fingerprint's content, keys in sorted order.
        subject_part = f'"subscription_id":{_encode_string(subject)},'
        head = '{"event_id":'
        if customer_id is not None:
            head = '{"customer_id":' + _encode_string(subject) + ',"event_id":'
            subject_part = ""
        content = (
            f"{head}{_encode_string(event_id)},"
            f'"metric":{_encode_string(metric)},'
            f'"properties":{props_text},'
            f'{subject_part}"timestamp_ms":{timestamp_ms}}}'
        )
        digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
        event = UsageEvent(
            event_id,
            customer_id,
            subscription_id,
            metric,
            timestamp_ms,
            MappingProxyType(dict(item.get("properties") or {})),
            digest,
        )
        return event, props_text


def fast_validate_batch(body: Any, now_ms: int) -> FastBatch:
    """Same result as `validate_usage_batch(body, now_ms)` (plus each candidate's properties
    text): first occurrence of an id is the candidate, a later identical one a duplicate, a later
    different one `event_id_reused`."""
    items = batch_items(body)
    validator = _Validator(now_ms)
    accepted: list[tuple[int, UsageEvent]] = []
    first_by_id: dict[str, UsageEvent] = {}
    texts: dict[str, str] = {}
    duplicates: list[int] = []
    rejected: list[RejectedEvent] = []
    for index, item in enumerate(items):
        fast = validator.fast(item)
        result: UsageEvent | Rejection
        if fast is not None:
            result, text = fast
        else:
            result = validate_usage_event(item, now_ms)
            text = properties_json(result.properties) if isinstance(result, UsageEvent) else ""
        if isinstance(result, UsageEvent) and result.event_id in first_by_id:
            reuse = check_event_id_reuse(first_by_id[result.event_id].fingerprint, result)
            if reuse is None:
                duplicates.append(index)
                continue
            result = reuse
        if isinstance(result, Rejection):
            raw_id = item.get("event_id") if isinstance(item, dict) else None
            event_id = raw_id if isinstance(raw_id, str) else None
            rejected.append(RejectedEvent(index, event_id, result.code, result.detail))
            continue
        first_by_id[result.event_id] = result
        texts[result.event_id] = text
        accepted.append((index, result))
    assert len(accepted) + len(duplicates) + len(rejected) == len(items), "each item counted once"
    return FastBatch(UsageBatch(tuple(accepted), tuple(duplicates), tuple(rejected)), texts)
