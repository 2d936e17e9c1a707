"""Pure pieces: Stripe object mapping of the sources, payment-state JSON round trip, hints."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billkeep.domain.payment_state import (
    DisputeOpened,
    PaymentFailed,
    PaymentProcessing,
    PaymentSucceeded,
    RefundObserved,
    RefundStatus,
    apply_all,
    facts_from_stripe_event,
    new_payment,
)
from billkeep.reconciliation.matching import GatewayStatus
from billkeep.reconciliation.sources import (
    InMemorySource,
    SourcePayment,
    fee_from_balance_transaction,
    payment_from_intent,
)
from billkeep.webhooks.hints import hints_from_event, with_fetched_object
from billkeep.webhooks.state_store import state_from_json, state_to_json

facts = st.one_of(
    st.just(PaymentProcessing()),
    st.builds(PaymentSucceeded, st.just(1000)),
    st.builds(
        PaymentFailed, st.sampled_from(["card_declined", "insufficient_funds"]), st.just("no")
    ),
    st.builds(
        RefundObserved,
        st.sampled_from(["re_1", "re_2"]),
        st.sampled_from([100, 200]),
        st.sampled_from(list(RefundStatus)),
    ),
    st.builds(DisputeOpened, st.sampled_from(["dp_1"]), st.just(500)),
)


@given(st.lists(facts, max_size=8))
def test_state_json_round_trips_and_is_canonical(sequence: list[object]) -> None:
    state = apply_all(new_payment("pi_1"), sequence)  # type: ignore[arg-type]
    text = state_to_json(state)
    assert state_from_json(text) == state
    assert state_to_json(state_from_json(text)) == text


def test_intent_mapping_statuses_and_command() -> None:
    intent = {
        "id": "pi_1",
        "amount": 500,
        "currency": "usd",
        "status": "succeeded",
        "created": 10,
        "latest_charge": "ch_1",
        "metadata": {"billkeep_command": "cmd_1"},
    }
    payment = payment_from_intent(intent)
    assert payment == SourcePayment(
        "pi_1", "cmd_1", 500, "usd", GatewayStatus.SUCCEEDED, 10_000, "ch_1"
    )
    failed = payment_from_intent(
        {
            **intent,
            "status": "requires_payment_method",
            "last_payment_error": {"code": "x"},
            "metadata": {},
        }
    )
    assert failed.status is GatewayStatus.FAILED and failed.command_ref is None
    assert (
        payment_from_intent({**intent, "status": "requires_action"}).status
        is GatewayStatus.PROCESSING
    )


def test_fee_mapping_only_for_charges() -> None:
    txn = {"id": "txn_1", "type": "charge", "source": "ch_1", "fee": 59}
    fee = fee_from_balance_transaction(txn)
    assert fee is not None and (fee.charge_reference, fee.fee_minor) == ("ch_1", 59)
    assert fee_from_balance_transaction({**txn, "type": "refund"}) is None


def test_in_memory_source_pages_within_the_window() -> None:
    payments = [
        SourcePayment(f"pi_{i}", None, 1, "usd", GatewayStatus.SUCCEEDED, i, None) for i in range(7)
    ]
    pages = list(InMemorySource(payments, page_size=3).payments(1, 6))
    assert [len(p) for p in pages] == [3, 2]


def test_hints_carry_commands_of_payment_and_refunds() -> None:
    event = {
        "id": "evt_1",
        "type": "charge.refunded",
        "data": {
            "object": {
                "id": "ch_1",
                "payment_intent": "pi_1",
                "amount": 100,
                "amount_captured": 100,
                "metadata": {"billkeep_command": "cmd_pay"},
                "refunds": {
                    "data": [
                        {
                            "id": "re_1",
                            "amount": 100,
                            "status": "succeeded",
                            "metadata": {"billkeep_command": "cmd_refund"},
                        }
                    ]
                },
            }
        },
    }
    hints = hints_from_event(event, facts_from_stripe_event(event))
    assert (hints.reference, hints.command_ref) == ("pi_1", "cmd_pay")
    assert dict(hints.refund_commands) == {"re_1": "cmd_refund"}
    assert not with_fetched_object(
        hints, {"id": "pi_1", "metadata": {}}
    ).foreign  # the event named it
    bare = hints_from_event(
        {
            "id": "e",
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_9", "amount": 5}},
        },
        facts_from_stripe_event(
            {
                "id": "e",
                "type": "payment_intent.succeeded",
                "data": {"object": {"id": "pi_9", "amount": 5}},
            }
        ),
    )
    assert with_fetched_object(bare, {"id": "pi_9", "metadata": {}}).foreign
