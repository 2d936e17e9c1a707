"""Every injected fault x every test card, engine -> StripeGateway -> simulator over real HTTP.

Each charge must end final (after the worker's scheduled retries, and for the async card after a
settlement), with exactly one successful payment intent at the gateway per succeeded charge, none
per failed one, and the ledger matching.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.gateways.stripe_harness import (
    CLIENT_READ_TIMEOUT_MS,
    Harness,
    fault_rule,
    make_harness,
    shared_sim,
)

from billkeep.domain.clock import ManualClock
from billkeep.gateways.simulator_process import SimulatorProcess

__all__ = ["shared_sim"]

LATENCY_MS = CLIENT_READ_TIMEOUT_MS + 600
FAULTS = {
    "timeout_after_commit": fault_rule("timeout_after_commit"),
    "error_before_commit": fault_rule("error_before_commit", status_code=503),
    "error_after_commit": fault_rule("error_after_commit"),
    # Slower than the client waits: the client gives up, then the payment happens; the first
    # resolution may even meet the original request still in flight (409 key in use).
    "latency": fault_rule("latency", latency_ms=LATENCY_MS),
}
CARDS = {
    "pm_card_visa": ("succeeded", None),
    "pm_card_chargeDeclined": ("failed", "card_declined"),
    "pm_card_chargeDeclinedInsufficientFunds": ("failed", "insufficient_funds"),
    "pm_card_async": ("succeeded", None),
}


@pytest.fixture
def harness(shared_sim: SimulatorProcess, sqlite_url: str, clock: ManualClock) -> Iterator[Harness]:
    shared_sim.clear_faults()
    h = make_harness(shared_sim, sqlite_url, clock)
    yield h
    shared_sim.clear_faults()
    h.billkeep.close()


def _settle_async(harness: Harness) -> Any:
    def on_pending(charge: dict[str, Any]) -> None:
        reference = charge["gateway_reference"]
        if reference is not None:  # known once the gateway answered `processing`
            harness.sim.settle(reference)

    return on_pending


@pytest.mark.parametrize("card", sorted(CARDS))
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_fault_and_card_ends_final_with_one_payment(
    harness: Harness, fault: str, card: str
) -> None:
    harness.sim.set_faults({"seed": 1, "rules": [FAULTS[fault]]})
    first = harness.charge(card)
    assert first.status in (201, 202, 402, 503), first.body_text
    if fault != "latency":
        # Every injected fault hides the outcome (or, before commit, its absence): never final.
        assert first.status in (202, 503) and not first.final, (fault, first.status)
    charge_id = first.body()["id"] if first.status != 503 else first.resource_id
    assert charge_id is not None
    on_pending = _settle_async(harness) if card == "pm_card_async" else None
    real_gap_ms = LATENCY_MS if fault == "latency" else 0
    charge = harness.resolve(charge_id, first.command_id, on_pending, real_gap_ms)

    expected_status, failure_code = CARDS[card]
    assert charge["status"] == expected_status, charge
    if failure_code is not None:
        assert charge["failure"]["code"] == failure_code
    harness.assert_books(charge, first.command_id)
    # One attempt: every resolution here reused the first key (it is still remembered).
    assert [a.attempt_number for a in harness.attempts(charge_id)] == [1]
    # A retry with the client's key replays the final outcome byte for byte.
    replay = harness.billkeep.create_charge(
        harness.tenant_id,
        {"customer_id": charge["customer_id"], "amount": 2_500, "currency": "usd"},
        "charge-1",
    )
    assert replay.replayed and replay.final
    assert replay.status == (201 if expected_status == "succeeded" else 402)
