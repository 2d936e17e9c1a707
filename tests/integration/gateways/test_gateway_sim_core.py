"""SimulatorCore in-process (no HTTP): clock-driven behaviour, concurrency on the store, parsing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from billkeep.domain.clock import ManualClock
from billkeep.gateways.simulator import SimConfig, SimStore, SimulatorCore
from billkeep.gateways.simulator.errors import StripeError
from billkeep.gateways.simulator.faults import FaultInjector, FaultKind
from billkeep.gateways.simulator.fees import FeeSchedule, parse_fee_percent
from billkeep.gateways.simulator.forms import parse_form
from billkeep.gateways.simulator.limits import IDEMPOTENCY_RETENTION_MS
from billkeep.gateways.simulator.params import (
    BulkCreate,
    ListRequest,
    PaymentIntentCreate,
    RefundCreate,
    SearchRequest,
)

VISA = PaymentIntentCreate(amount=1000, currency="usd", payment_method="pm_card_visa", confirm=True)


def _core(tmp_path: Path, clock: ManualClock, **config: object) -> SimulatorCore:
    return SimulatorCore(SimStore(str(tmp_path / "core.db")), clock, SimConfig(seed=1, **config))  # type: ignore[arg-type]


def test_idempotency_keys_expire_after_24_hours_of_simulator_time(tmp_path: Path) -> None:
    clock = ManualClock()
    core = _core(tmp_path, clock)
    first = core.create_payment_intent(VISA, "k")
    clock.advance(IDEMPOTENCY_RETENTION_MS - 1)
    assert core.create_payment_intent(VISA, "k").replayed
    clock.advance(1)
    after = core.create_payment_intent(VISA, "k")
    assert not after.replayed and after.body["id"] != first.body["id"]


def test_concurrent_refunds_never_exceed_the_charge(tmp_path: Path) -> None:
    core = _core(tmp_path, ManualClock())
    intent_id = core.create_payment_intent(VISA).body["id"]
    outcomes: list[str] = []
    lock = threading.Lock()

    def refund() -> None:
        try:
            core.create_refund(RefundCreate(payment_intent=intent_id, amount=300))
            result = "ok"
        except StripeError as error:
            result = error.code or "error"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=refund) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 3 and outcomes.count("amount_too_large") == 5
    assert core.state()["refunds"]["amount_by_payment_intent"] == {intent_id: 900}


def test_async_payments_settle_on_the_injected_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    core = _core(tmp_path, clock, async_settle_ms=5_000)
    intent = core.create_payment_intent(
        PaymentIntentCreate(
            amount=500, currency="usd", payment_method="pm_card_async", confirm=True
        )
    ).body
    assert intent["status"] == "processing"
    clock.advance(4_999)
    assert core.settle_due() == 0
    clock.advance(1)
    assert core.settle_due() == 1
    assert core.retrieve("payment_intent", intent["id"])["status"] == "succeeded"
    assert core.settle_due() == 0


def test_seeded_cores_issue_the_same_ids(tmp_path: Path) -> None:
    one = SimulatorCore(SimStore(":memory:"), ManualClock(), SimConfig(seed=9))
    two = SimulatorCore(SimStore(str(tmp_path / "two.db")), ManualClock(), SimConfig(seed=9))
    assert one.create_payment_intent(VISA).body["id"] == two.create_payment_intent(VISA).body["id"]


def test_bulk_generation_lists_and_searches(tmp_path: Path) -> None:
    core = _core(tmp_path, ManualClock())
    result = core.bulk_create_payment_intents(
        BulkCreate(count=250, amount=700, created_start_s=1_000, spacing_s=10, metadata={"b": "1"})
    )
    assert result.created == 250
    state = core.state()["payment_intents"]
    assert state["by_status"] == {"succeeded": 250}
    window = core.list(
        "payment_intent",
        ListRequest(limit=100, created_gte_s=1_000, created_lt_s=1_100),
        "/v1/payment_intents",
    )
    assert len(window["data"]) == 10 and not window["has_more"]
    found = core.search_payment_intents(SearchRequest(query="metadata['b']:'1'", limit=100))
    assert len(found["data"]) == 100 and found["has_more"]


def test_fees_are_integer_and_rounded_half_up() -> None:
    assert parse_fee_percent("2.9") == 29_000
    fees = FeeSchedule.from_text("2.9", 30)
    assert fees.fee_for(1000) == 59  # 29 + 30
    assert fees.fee_for(50) == 31  # 1.45 -> 1, + 30
    assert FeeSchedule.from_text("2.5", 0).fee_for(10) == 0  # 0.25 -> 0
    assert FeeSchedule.from_text("2.5", 0).fee_for(20) == 1  # 0.5 -> 1 (half up)
    assert FeeSchedule.from_text("2.9", 30).fee_for(10) == 10  # never more than the charge
    for bad in ("abc", "-1", "101", "1.23456"):
        with pytest.raises(ValueError):
            parse_fee_percent(bad)


def test_form_parsing_bracket_notation() -> None:
    form = parse_form(
        "amount=5&metadata[a]=1&metadata[b]=x%20y&created[gte]=3&expand[]=p&expand[]=q"
    )
    assert form == {
        "amount": "5",
        "metadata": {"a": "1", "b": "x y"},
        "created": {"gte": "3"},
        "expand": ["p", "q"],
    }
    with pytest.raises(StripeError):
        parse_form("amount=1&amount=2")


def test_fault_injector_count_probability_and_prefix_match() -> None:
    faults = FaultInjector(seed=3)
    faults.configure(
        {
            "rules": [
                {
                    "match": {"method": "POST", "path": "/v1/refunds*"},
                    "fault": "error_after_commit",
                    "count": 2,
                },
            ]
        }
    )
    assert faults.decide("GET", "/v1/refunds").kind is None
    assert faults.decide("POST", "/v1/refunds/re_1").kind is FaultKind.ERROR_AFTER_COMMIT
    assert faults.decide("POST", "/v1/refunds").kind is FaultKind.ERROR_AFTER_COMMIT
    assert faults.decide("POST", "/v1/refunds").kind is None  # count exhausted
    faults.configure(
        {"seed": 1, "rules": [{"fault": "latency", "latency_ms": 5, "probability": 0}]}
    )
    assert faults.decide("GET", "/v1/events").is_noop
