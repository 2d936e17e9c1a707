"""The chaos audit's own checks can fail: each one fed a made-up breach reports its invariant."""

from __future__ import annotations

from billkeep.chaos.audit import (
    _gateway_objects_named,
    _i1_sim_state,
    _i2_clients_final,
    _i5_answers_identical,
    _i7_sim_state,
)
from billkeep.chaos.client import ClientLog, FinalAnswer
from billkeep.sim.auditor import GatewayPayment, GatewayView


def _view() -> GatewayView:
    payment = GatewayPayment("pi_1", "t1", "cmd_1", 1000, "usd", "succeeded")
    stray = GatewayPayment("pi_2", None, "cmd_unknown", 500, "usd", "succeeded")
    return GatewayView({"pi_1": payment, "pi_2": stray}, {})


def test_sim_state_double_payment_and_over_refund_are_reported() -> None:
    state = {
        "payment_intents": {"succeeded_by_command": {"cmd_1": 1, "cmd_2": 2}},
        "refunds": {"amount_by_payment_intent": {"pi_1": 1001}},
    }
    assert [v.invariant for v in _i1_sim_state(state)] == ["I1"]
    assert [v.invariant for v in _i7_sim_state(state, _view())] == ["I7"]
    state["refunds"]["amount_by_payment_intent"] = {"pi_1": 1000}
    assert _i7_sim_state(state, _view()) == []


def test_gateway_payment_of_no_recorded_command_is_reported() -> None:
    found = _gateway_objects_named(_view())
    assert [(v.invariant, "pi_2" in v.detail) for v in found] == [("I11", True)]


def test_replay_differing_from_first_answer_and_pending_key_are_reported() -> None:
    log = ClientLog()
    ref = ("t1", "/v1/charges", "k")
    log.finals[ref] = [
        FinalAnswer(201, b'{"id":"ch_1"}', "cmd_1", False),
        FinalAnswer(201, b'{"id":"ch_1"}', "cmd_1", True),
    ]
    assert _i5_answers_identical(log) == []
    log.finals[ref].append(FinalAnswer(201, b'{"id":"ch_1" }', "cmd_1", True))
    assert [v.invariant for v in _i5_answers_identical(log)] == ["I5"]
    log.pending.add(("t1", "/v1/refunds", "r"))
    assert [v.invariant for v in _i2_clients_final(log)] == ["I2"]
