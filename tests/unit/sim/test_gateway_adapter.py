"""SimulatedGateway: each network fault maps to the outcome class the engine must see, and the
simulator's idempotency makes a repeated key replay instead of paying twice."""

from __future__ import annotations

import random

import pytest

from billkeep.domain.clock import ManualClock
from billkeep.gateways.protocol import GatewayLookupFailed, Outcome, PaymentRequest, RefundRequest
from billkeep.gateways.simulator import SimConfig, SimStore, SimulatorCore
from billkeep.sim.gateway import GatewayFaults, GatewayRecords, NetworkFault, SimulatedGateway


class _Scripted(GatewayFaults):
    """Faults in a fixed order instead of drawn."""

    def __init__(self, script: list[NetworkFault | None], lookups_fail: bool = False) -> None:
        super().__init__(random.Random(0), 0.0, 0.0, 0)
        self.script = script
        self.lookups_fail = lookups_fail

    def draw(self, call: str) -> NetworkFault | None:
        return self.script.pop(0) if self.script else None

    def lookup_fails(self) -> bool:
        return self.lookups_fail


def _gateway(
    script: list[NetworkFault | None], **kw: bool
) -> tuple[SimulatedGateway, SimulatorCore]:
    clock = ManualClock()
    core = SimulatorCore(SimStore(":memory:"), clock, SimConfig(seed=1, async_settle_ms=None))
    gw = SimulatedGateway(
        core, "ten_A", clock, _Scripted(script, **kw), GatewayRecords(), lambda _p: None
    )
    return gw, core


def _pay(gw: SimulatedGateway, method: str = "pm_card_visa", key: str = "k1") -> Outcome:
    request = PaymentRequest(key, "cmd_1", 1000, "usd", method)
    return gw.create_payment(request).outcome


@pytest.mark.parametrize(
    ("fault", "outcome", "payments"),
    [
        (NetworkFault.REFUSED, Outcome.NOT_EXECUTED, 0),
        (NetworkFault.TIMEOUT_BEFORE_COMMIT, Outcome.UNKNOWN, 0),
        (NetworkFault.ERROR_BEFORE_COMMIT, Outcome.UNKNOWN, 0),
        (NetworkFault.ERROR_AFTER_COMMIT, Outcome.UNKNOWN, 1),
        (NetworkFault.TIMEOUT_AFTER_COMMIT, Outcome.UNKNOWN, 1),
        (None, Outcome.SUCCEEDED, 1),
    ],
)
def test_fault_classification(fault: NetworkFault | None, outcome: Outcome, payments: int) -> None:
    gw, core = _gateway([fault])
    assert _pay(gw) is outcome
    assert core.state()["payment_intents"]["total"] == payments


def test_same_key_after_commit_replays_the_one_payment() -> None:
    gw, core = _gateway([NetworkFault.TIMEOUT_AFTER_COMMIT])
    assert _pay(gw) is Outcome.UNKNOWN
    assert _pay(gw) is Outcome.SUCCEEDED
    assert core.state()["payment_intents"]["succeeded_by_command"] == {"cmd_1": 1}
    assert [p.outcome for p in gw.find_payments("cmd_1")] == [Outcome.SUCCEEDED]


def test_declines_async_and_lookups() -> None:
    gw, _core = _gateway([], lookups_fail=False)
    assert _pay(gw, "pm_card_chargeDeclined", "k-decline") is Outcome.DECLINED
    assert _pay(gw, "pm_card_async", "k-async") is Outcome.PROCESSING
    failing, _ = _gateway([], lookups_fail=True)
    with pytest.raises(GatewayLookupFailed):
        failing.find_payments("cmd_1")


def test_refund_over_the_amount_is_declined_not_raised() -> None:
    gw, _core = _gateway([])
    request = PaymentRequest("k1", "cmd_1", 1000, "usd", "pm_card_visa")
    reference = gw.create_payment(request).reference
    assert reference is not None
    ok = gw.create_refund(RefundRequest("r1", "cmd_2", reference, 600, "usd"))
    too_much = gw.create_refund(RefundRequest("r2", "cmd_3", reference, 600, "usd"))
    assert ok.outcome is Outcome.SUCCEEDED
    assert too_much.outcome is Outcome.DECLINED
