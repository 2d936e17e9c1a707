"""The cheap validation path of ingestion gives exactly the domain validator's answer: the same
candidates with the same fingerprints, duplicates and rejections (codes and details)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from billkeep.billing.usage_fast import fast_validate_batch
from billkeep.domain.usage import validate_usage_batch

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

_ids = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8),
    st.sampled_from(["", "a b", "é", 'q"uote', "back\\slash", "x" * 256]),
)
_timestamps = st.sampled_from(
    [
        "2025-12-31T23:59:59Z",
        "2025-12-31T23:59:59.123456+01:00",
        "2026-01-01T00:04:59Z",
        "2026-01-01T00:05:01Z",  # in the future beyond the skew
        "2025-02-29T00:00:00Z",  # not a date
        "1969-12-31T23:59:59Z",
        "2025-06-01 10:00:00Z",
        "2025-06-01T10:00:00",
        20250601,
    ]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.just("z" * 1025),
    st.lists(st.integers(), max_size=2),
)
_properties = st.one_of(
    st.none(),
    st.dictionaries(st.text(min_size=0, max_size=3), _scalars, max_size=4),
    st.just({f"k{i}": i for i in range(51)}),
    st.just({"big": "y" * 1000, **{f"p{i}": "y" * 1000 for i in range(8)}}),
    st.just([1, 2]),
)


@st.composite
def _event(draw: st.DrawFn) -> Any:
    event: dict[str, Any] = {
        "event_id": draw(_ids),
        "metric": draw(st.sampled_from(["units", "api_calls", "Bad Metric", 7])),
        "timestamp": draw(_timestamps),
    }
    subject = draw(st.sampled_from(["customer", "subscription", "both", "none"]))
    if subject in ("customer", "both"):
        event["customer_id"] = draw(_ids)
    if subject in ("subscription", "both"):
        event["subscription_id"] = draw(_ids)
    properties = draw(_properties)
    if properties is not None or draw(st.booleans()):
        event["properties"] = properties
    if draw(st.integers(0, 20)) == 0:
        event["extra"] = 1
    return draw(st.sampled_from([event, event, event, event, "not an object"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_event(), max_size=12), st.booleans(), st.integers(min_value=0, max_value=11))
def test_fast_path_equals_the_domain_validator(events: list[Any], repeat: bool, which: int) -> None:
    # Repeat an event (ids also repeat with other content) to exercise in-batch duplicates.
    if events and repeat:
        events = [*events, events[which % len(events)]]
    body = {"events": json.loads(json.dumps(events))}
    expected = validate_usage_batch(body, NOW_MS)
    fast = fast_validate_batch(body, NOW_MS)
    assert fast.batch.duplicate_indexes == expected.duplicate_indexes
    assert fast.batch.rejected == expected.rejected
    assert [(i, e.event_id, e.fingerprint) for i, e in fast.batch.events] == [
        (i, e.event_id, e.fingerprint) for i, e in expected.events
    ]
    assert fast.batch.events == expected.events
    for _, event in fast.batch.events:
        assert json.loads(fast.properties_text[event.event_id]) == dict(event.properties)


def test_typical_events_take_the_fast_path_with_domain_fingerprints() -> None:
    body = {
        "events": [
            {"event_id": f"e{i}", "subscription_id": "sub_1", "metric": "units",
             "timestamp": "2025-12-31T10:00:00Z", "properties": {"units": i, "zone": "eu"}}
            for i in range(50)
        ] + [{"event_id": "c1", "customer_id": "cus_1", "metric": "units",
              "timestamp": "2025-12-31T10:00:00+02:00"}]
    }  # fmt: skip
    fast = fast_validate_batch(body, NOW_MS)
    expected = validate_usage_batch(body, NOW_MS)
    assert len(fast.batch.events) == 51
    assert fast.batch == expected
    assert fast.properties_text["e3"] == '{"units":3,"zone":"eu"}'
    assert fast.properties_text["c1"] == "{}"
