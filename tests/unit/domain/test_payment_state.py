"""The payment state machine: order independence, monotonicity, exactly-once effects, Stripe facts."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billkeep.domain.errors import ValidationFailed
from billkeep.domain.payment_state import (
    DisputeOpened,
    EffectKind,
    Fact,
    LedgerEffect,
    Outcome,
    PaymentFailed,
    PaymentProcessing,
    PaymentState,
    PaymentStatus,
    PaymentSucceeded,
    RefundObserved,
    RefundStatus,
    StripeEventMalformed,
    apply,
    apply_all,
    facts_from_stripe_event,
    is_at_most,
    ledger_effects,
    new_payment,
)

REF = "pi_3PgafyB7WZ01zgkW0000TEST"


def fold(facts: list[Fact], reference: str = REF) -> PaymentState:
    return apply_all(new_payment(reference), facts)


# ------------------------------------------------------------------------ generated histories


@dataclass(frozen=True)
class History:
    """A consistent set of facts about one payment, and what the final state must be."""

    facts: list[Fact]
    amount_minor: int
    succeeded: bool
    refunds: dict[str, tuple[int, RefundStatus]]
    disputes: dict[str, int]


_FINAL_REFUND_STATUSES = st.sampled_from(
    [RefundStatus.SUCCEEDED, RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.CANCELED]
)


@st.composite
def histories(draw: st.DrawFn) -> History:
    amount = draw(st.integers(min_value=1, max_value=1_000_000))
    outcome = draw(st.sampled_from(["succeeded", "failed", "processing"]))
    facts: list[Fact] = [PaymentProcessing()] * draw(st.integers(0, 2))
    failures = draw(st.lists(st.sampled_from(["card_declined", "insufficient_funds"]), max_size=2))
    if outcome != "processing":
        facts += [PaymentFailed(code, f"{code} message") for code in failures]
    refunds: dict[str, tuple[int, RefundStatus]] = {}
    disputes: dict[str, int] = {}
    if outcome == "succeeded":
        facts.append(PaymentSucceeded(amount))
        left = amount
        for index in range(draw(st.integers(0, 4))):
            status = draw(_FINAL_REFUND_STATUSES)
            counted = status is RefundStatus.SUCCEEDED
            if counted and left == 0:
                continue
            refund_amount = draw(st.integers(1, left if counted else amount))
            left -= refund_amount if counted else 0
            refund_id = f"re_{index}"
            refunds[refund_id] = (refund_amount, status)
            if draw(st.booleans()):  # learned as pending first, as refund.created then .updated
                facts.append(RefundObserved(refund_id, refund_amount, RefundStatus.PENDING))
            facts.append(RefundObserved(refund_id, refund_amount, status))
        for index in range(draw(st.integers(0, 2))):
            disputes[f"dp_{index}"] = draw(st.integers(1, amount))
            facts.append(DisputeOpened(f"dp_{index}", disputes[f"dp_{index}"]))
    if facts:  # webhooks are delivered at least once: some arrive twice or three times
        facts += draw(st.lists(st.sampled_from(facts), max_size=len(facts) * 2))
    return History(facts, amount, outcome == "succeeded", refunds, disputes)


@st.composite
def history_and_permutation(draw: st.DrawFn) -> tuple[History, list[Fact]]:
    history = draw(histories())
    return history, draw(st.permutations(history.facts))


def expected_effects(history: History) -> frozenset[LedgerEffect]:
    if not history.succeeded:
        return frozenset()
    effects = {LedgerEffect(f"payment:{REF}:succeeded", EffectKind.PAYMENT, history.amount_minor)}
    effects |= {
        LedgerEffect(f"refund:{refund_id}", EffectKind.REFUND, amount)
        for refund_id, (amount, status) in history.refunds.items()
        if status is RefundStatus.SUCCEEDED
    }
    effects |= {
        LedgerEffect(f"dispute:{dispute_id}", EffectKind.DISPUTE, amount)
        for dispute_id, amount in history.disputes.items()
    }
    return frozenset(effects)


@settings(max_examples=400)
@given(history_and_permutation())
def test_any_permutation_ends_in_the_same_state_and_ledger(
    case: tuple[History, list[Fact]],
) -> None:
    history, shuffled = case
    in_order = fold(history.facts)
    shuffled_state = fold(shuffled)
    assert shuffled_state == in_order
    assert ledger_effects(shuffled_state) == ledger_effects(in_order) == expected_effects(history)


@settings(max_examples=400)
@given(history_and_permutation())
def test_every_step_moves_forward_and_posts_each_effect_once(
    case: tuple[History, list[Fact]],
) -> None:
    _, shuffled = case
    state = new_payment(REF)
    posted: list[LedgerEffect] = []
    for fact in shuffled:
        step = apply(state, fact)
        assert step.outcome is not Outcome.CONFLICT, step.reason
        assert is_at_most(state, step.state), f"{fact} moved {state} backward"
        if step.outcome is not Outcome.APPLIED:
            assert step.state is state and step.effects == ()
        if step.state.amount_received_minor is not None:
            assert step.state.amount_refunded_minor <= step.state.amount_received_minor
        posted.extend(step.effects)
        state = step.state
    assert len(posted) == len(set(posted)), "an effect was posted twice"
    assert set(posted) == ledger_effects(state)


@given(histories())
def test_final_state_matches_the_facts(history: History) -> None:
    state = fold(history.facts)
    succeeded_refunds = [a for a, s in history.refunds.values() if s is RefundStatus.SUCCEEDED]
    if history.succeeded:
        assert state.status is PaymentStatus.SUCCEEDED
        assert state.amount_received_minor == history.amount_minor
        assert state.amount_refunded_minor == sum(succeeded_refunds)
        assert state.refunded == (sum(succeeded_refunds) == history.amount_minor)
        assert state.disputed == bool(history.disputes)
        assert state.failures == frozenset()
    else:
        assert state.status in (
            PaymentStatus.PENDING,
            PaymentStatus.PROCESSING,
            PaymentStatus.FAILED,
        )
        assert ledger_effects(state) == frozenset()


# ----------------------------------------------------------------------- the outcome table


def test_processing_after_success_is_implied_not_stale() -> None:
    state = fold([PaymentSucceeded(1000), RefundObserved("re_1", 1000)])
    step = apply(state, PaymentProcessing())
    assert step.outcome is Outcome.DUPLICATE and step.state is state


def test_success_after_a_full_refund_is_a_duplicate_not_a_step_back() -> None:
    state = fold([PaymentSucceeded(1000), RefundObserved("re_1", 1000)])
    assert state.refunded
    step = apply(state, PaymentSucceeded(1000))
    assert step.outcome is Outcome.DUPLICATE
    assert step.state.refunded


def test_failure_after_success_is_stale_and_never_flips_the_status() -> None:
    state = fold([PaymentSucceeded(1000)])
    step = apply(state, PaymentFailed("card_declined", "Your card was declined."))
    assert step.outcome is Outcome.STALE
    assert step.state.status is PaymentStatus.SUCCEEDED


def test_success_supersedes_an_earlier_failed_attempt() -> None:
    failed = fold([PaymentFailed("card_declined", "declined")])
    step = apply(failed, PaymentSucceeded(1000))
    assert step.outcome is Outcome.APPLIED
    assert step.state.status is PaymentStatus.SUCCEEDED and step.state.failures == frozenset()
    assert step.effects == (LedgerEffect(f"payment:{REF}:succeeded", EffectKind.PAYMENT, 1000),)


def test_same_failure_twice_is_a_duplicate_and_a_new_one_is_recorded() -> None:
    first = fold([PaymentFailed("card_declined", "declined")])
    assert apply(first, PaymentFailed("card_declined", "declined")).outcome is Outcome.DUPLICATE
    second = apply(first, PaymentFailed("insufficient_funds", "no money"))
    assert second.outcome is Outcome.APPLIED and len(second.state.failures) == 2


def test_the_same_refund_seen_twice_counts_once() -> None:
    state = fold([PaymentSucceeded(1000), RefundObserved("re_1", 300)])
    step = apply(state, RefundObserved("re_1", 300))
    assert step.outcome is Outcome.DUPLICATE
    assert step.state.amount_refunded_minor == 300


def test_a_refund_counts_once_it_succeeds_and_pending_after_that_is_implied() -> None:
    pending = fold([PaymentSucceeded(1000), RefundObserved("re_1", 300, RefundStatus.PENDING)])
    assert pending.amount_refunded_minor == 0 and ledger_effects(pending) == {
        LedgerEffect(f"payment:{REF}:succeeded", EffectKind.PAYMENT, 1000)
    }
    done = apply(pending, RefundObserved("re_1", 300, RefundStatus.SUCCEEDED))
    assert done.outcome is Outcome.APPLIED
    assert done.effects == (LedgerEffect("refund:re_1", EffectKind.REFUND, 300),)
    late_pending = apply(done.state, RefundObserved("re_1", 300, RefundStatus.PENDING))
    assert late_pending.outcome is Outcome.DUPLICATE


def test_a_failed_refund_after_success_is_stale_and_failed_refunds_do_not_count() -> None:
    succeeded = fold([PaymentSucceeded(1000), RefundObserved("re_1", 300)])
    assert apply(succeeded, RefundObserved("re_1", 300, RefundStatus.FAILED)).outcome is (
        Outcome.STALE
    )
    failed = fold([PaymentSucceeded(1000), RefundObserved("re_2", 300, RefundStatus.FAILED)])
    assert failed.amount_refunded_minor == 0
    canceled = apply(failed, RefundObserved("re_2", 300, RefundStatus.CANCELED))
    assert canceled.outcome is Outcome.STALE


_REFUND_ORDER = [
    RefundStatus.PENDING,
    RefundStatus.CANCELED,
    RefundStatus.FAILED,
    RefundStatus.SUCCEEDED,
]


@st.composite
def refund_with_lower_reports(draw: st.DrawFn) -> tuple[int, int, RefundStatus, list[Fact]]:
    """One refund whose true status is `final`, reported together with lower statuses (late or
    out-of-order webhooks), the payment's success, and duplicates of any of them, in any order."""
    amount = draw(st.integers(min_value=1, max_value=1_000_000))
    refund_amount = draw(st.integers(min_value=1, max_value=amount))
    final = draw(st.sampled_from(_REFUND_ORDER[1:]))
    lower = _REFUND_ORDER[: _REFUND_ORDER.index(final)]
    reported = draw(st.lists(st.sampled_from(lower), min_size=1, max_size=4))
    facts: list[Fact] = [PaymentSucceeded(amount), RefundObserved("re_1", refund_amount, final)]
    facts += [RefundObserved("re_1", refund_amount, status) for status in reported]
    facts += draw(st.lists(st.sampled_from(facts), max_size=3))
    return amount, refund_amount, final, draw(st.permutations(facts))


@settings(max_examples=300)
@given(refund_with_lower_reports())
def test_a_lower_refund_status_in_any_order_ends_in_the_same_state(
    case: tuple[int, int, RefundStatus, list[Fact]],
) -> None:
    amount, refund_amount, final, shuffled = case
    expected = fold([PaymentSucceeded(amount), RefundObserved("re_1", refund_amount, final)])
    state = new_payment(REF)
    for fact in shuffled:
        step = apply(state, fact)
        assert is_at_most(state, step.state), f"{fact} moved {state} backward"
        known = state.refund("re_1")
        lower_than_known = (
            isinstance(fact, RefundObserved)
            and known is not None
            and _REFUND_ORDER.index(fact.status) < _REFUND_ORDER.index(known.status)
        )
        if lower_than_known:
            # A lower report than what is known changes nothing (stale; pending: implied).
            assert step.outcome in (Outcome.STALE, Outcome.DUPLICATE), step
            assert step.state is state
        state = step.state
    assert state == expected
    record = state.refund("re_1")
    assert record is not None and record.status is final
    counted = refund_amount if final is RefundStatus.SUCCEEDED else 0
    assert state.amount_refunded_minor == counted
    assert ledger_effects(state) == ledger_effects(expected)


def test_a_refund_before_the_success_implies_success_and_waits_for_the_amount() -> None:
    early = apply(new_payment(REF), RefundObserved("re_1", 400))
    assert early.outcome is Outcome.APPLIED
    assert early.state.status is PaymentStatus.SUCCEEDED
    assert early.effects == ()  # the payment effect is not known yet: nothing to reverse
    later = apply(early.state, PaymentSucceeded(1000))
    assert set(later.effects) == {
        LedgerEffect(f"payment:{REF}:succeeded", EffectKind.PAYMENT, 1000),
        LedgerEffect("refund:re_1", EffectKind.REFUND, 400),
    }
    assert apply(later.state, PaymentFailed("card_declined", "")).outcome is Outcome.STALE


def test_dispute_marks_the_payment_disputed_once() -> None:
    state = fold([PaymentSucceeded(1000), DisputeOpened("dp_1", 1000)])
    assert state.disputed
    step = apply(state, DisputeOpened("dp_1", 1000))
    assert step.outcome is Outcome.DUPLICATE


@pytest.mark.parametrize(
    ("facts", "fact"),
    [
        ([PaymentSucceeded(1000)], PaymentSucceeded(999)),
        ([PaymentSucceeded(1000), RefundObserved("re_1", 300)], RefundObserved("re_1", 200)),
        ([PaymentSucceeded(1000), RefundObserved("re_1", 800)], RefundObserved("re_2", 201)),
        ([RefundObserved("re_1", 800)], PaymentSucceeded(500)),
        ([PaymentSucceeded(1000)], DisputeOpened("dp_1", 1001)),
        ([PaymentSucceeded(1000), DisputeOpened("dp_1", 10)], DisputeOpened("dp_1", 20)),
        ([DisputeOpened("dp_1", 800)], PaymentSucceeded(500)),
    ],
    ids=[
        "two-amounts",
        "refund-two-amounts",
        "over-refund",
        "refunds-over-captured",
        "dispute-over-captured",
        "dispute-two-amounts",
        "captured-below-dispute",
    ],
)
def test_contradictory_facts_are_conflicts_that_change_nothing(
    facts: list[Fact], fact: Fact
) -> None:
    state = fold(facts)
    step = apply(state, fact)
    assert step.outcome is Outcome.CONFLICT
    assert step.state is state and step.effects == () and step.reason


def test_facts_validate_their_amounts() -> None:
    with pytest.raises(ValidationFailed):
        PaymentSucceeded(0)
    with pytest.raises(ValidationFailed):
        RefundObserved("re_1", -5)
    with pytest.raises(ValidationFailed):
        DisputeOpened("dp_1", True)


def test_state_order_rejects_other_payments_and_lost_knowledge() -> None:
    richer = fold([PaymentSucceeded(1000), RefundObserved("re_1", 10)])
    poorer = fold([PaymentSucceeded(1000)])
    assert is_at_most(poorer, richer) and not is_at_most(richer, poorer)
    assert not is_at_most(poorer, fold([PaymentSucceeded(1000)], reference="pi_other"))


# --------------------------------------------------------------------------- Stripe mapping
# Objects carry the fields and nesting of Stripe's examples (shared/stripe/fixtures-subset.json).


def stripe_event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "api_version": "2024-06-20",
        "created": 1721948600,
        "data": {"object": obj},
        "id": "evt_1Pgc76B7WZ01zgkWwyRHS12y",
        "livemode": False,
        "object": "event",
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": "cmd_01JABC"},
        "type": event_type,
    }


PAYMENT_INTENT: dict[str, Any] = {
    "amount": 1099,
    "amount_capturable": 0,
    "amount_details": {"tip": {}},
    "amount_received": 1099,
    "application": None,
    "canceled_at": None,
    "capture_method": "automatic",
    "confirmation_method": "automatic",
    "created": 1721948530,
    "currency": "usd",
    "customer": "cus_QXg1o8vcGmoR32",
    "description": None,
    "id": REF,
    "last_payment_error": None,
    "latest_charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "livemode": False,
    "metadata": {"billkeep_command": "cmd_01JABC"},
    "object": "payment_intent",
    "payment_method": "pm_card_visa",
    "payment_method_types": ["card"],
    "processing": None,
    "status": "succeeded",
}

REFUND: dict[str, Any] = {
    "amount": 100,
    "balance_transaction": None,
    "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "created": 1234567890,
    "currency": "usd",
    "destination_details": {"card": {"type": "reversal"}, "type": "card"},
    "id": "re_1Pgc72B7WZ01zgkWqPvrRrPE",
    "metadata": {},
    "object": "refund",
    "payment_intent": REF,
    "reason": None,
    "status": "succeeded",
}

CHARGE: dict[str, Any] = {
    "amount": 1099,
    "amount_captured": 1099,
    "amount_refunded": 100,
    "balance_transaction": "txn_1PgaxNB7WZ01zgkWEV3TLf40",
    "captured": True,
    "created": 1234567890,
    "currency": "usd",
    "disputed": False,
    "failure_code": None,
    "failure_message": None,
    "id": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "metadata": {},
    "object": "charge",
    "paid": True,
    "payment_intent": REF,
    "refunded": False,
    "refunds": {
        "data": [REFUND],
        "has_more": False,
        "object": "list",
        "url": "/v1/charges/ch_1PgafuB7WZ01zgkWXYmPNZs8/refunds",
    },
    "status": "succeeded",
}

DISPUTE: dict[str, Any] = {
    "amount": 1000,
    "balance_transactions": [],
    "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "created": 1234567890,
    "currency": "usd",
    "id": "dp_1Pgc71B7WZ01zgkWMevJiAUx",
    "is_charge_refundable": True,
    "livemode": False,
    "metadata": {},
    "object": "dispute",
    "payment_intent": REF,
    "reason": "general",
    "status": "warning_needs_response",
}


def test_payment_intent_succeeded_maps_to_success_with_amount_received() -> None:
    mapped = facts_from_stripe_event(stripe_event("payment_intent.succeeded", PAYMENT_INTENT))
    assert mapped.reference == REF and mapped.event_id == "evt_1Pgc76B7WZ01zgkWwyRHS12y"
    assert mapped.charge_id == "ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert mapped.facts == (PaymentSucceeded(1099),) and not mapped.ignored


def test_payment_failed_takes_the_decline_code_and_message() -> None:
    intent = copy.deepcopy(PAYMENT_INTENT) | {
        "status": "requires_payment_method",
        "amount_received": 0,
        "last_payment_error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    }
    mapped = facts_from_stripe_event(stripe_event("payment_intent.payment_failed", intent))
    assert mapped.facts == (
        PaymentFailed("insufficient_funds", "Your card has insufficient funds."),
    )


def test_payment_failed_with_only_an_error_type_still_maps() -> None:
    intent = PAYMENT_INTENT | {"status": "requires_payment_method", "amount_received": 0}
    intent["last_payment_error"] = {"type": "idempotency_error"}  # as in Stripe's example object
    mapped = facts_from_stripe_event(stripe_event("payment_intent.payment_failed", intent))
    assert mapped.facts == (PaymentFailed("idempotency_error", ""),)


def test_processing_maps_to_processing() -> None:
    intent = PAYMENT_INTENT | {"status": "processing", "amount_received": 0}
    mapped = facts_from_stripe_event(stripe_event("payment_intent.processing", intent))
    assert mapped.facts == (PaymentProcessing(),)


def test_charge_refunded_implies_capture_and_lists_refunds_by_id() -> None:
    mapped = facts_from_stripe_event(stripe_event("charge.refunded", CHARGE))
    assert mapped.reference == REF and mapped.charge_id == CHARGE["id"]
    assert mapped.facts == (
        PaymentSucceeded(1099),
        RefundObserved("re_1Pgc72B7WZ01zgkWqPvrRrPE", 100, RefundStatus.SUCCEEDED),
    )
    assert not mapped.refunds_incomplete


def test_charge_refunded_without_the_refund_list_asks_for_a_listing() -> None:
    charge = {key: value for key, value in CHARGE.items() if key != "refunds"}
    mapped = facts_from_stripe_event(stripe_event("charge.refunded", charge))
    assert mapped.facts == (PaymentSucceeded(1099),)
    assert mapped.refunds_incomplete


def test_refund_created_then_updated_count_once() -> None:
    pending = REFUND | {"status": "pending"}
    created = facts_from_stripe_event(stripe_event("refund.created", pending))
    updated = facts_from_stripe_event(stripe_event("refund.updated", REFUND))
    refunded = facts_from_stripe_event(stripe_event("charge.refunded", CHARGE))
    assert created.reference == updated.reference == REF
    events = [updated, refunded, created, updated]
    state = fold([fact for event in events for fact in event.facts])
    assert state.amount_refunded_minor == 100
    assert ledger_effects(state) == {
        LedgerEffect(f"payment:{REF}:succeeded", EffectKind.PAYMENT, 1099),
        LedgerEffect("refund:re_1Pgc72B7WZ01zgkWqPvrRrPE", EffectKind.REFUND, 100),
    }


def test_requires_action_refund_is_pending() -> None:
    event = stripe_event("refund.created", REFUND | {"status": "requires_action"})
    assert facts_from_stripe_event(event).facts[0] == RefundObserved(
        REFUND["id"], 100, RefundStatus.PENDING
    )


def test_dispute_created_maps_to_dispute_opened() -> None:
    mapped = facts_from_stripe_event(stripe_event("charge.dispute.created", DISPUTE))
    assert mapped.facts == (DisputeOpened("dp_1Pgc71B7WZ01zgkWMevJiAUx", 1000),)
    assert mapped.reference == REF


def test_dispute_without_payment_intent_names_the_charge_to_resolve() -> None:
    mapped = facts_from_stripe_event(
        stripe_event("charge.dispute.created", DISPUTE | {"payment_intent": None})
    )
    assert mapped.reference is None and mapped.charge_id == DISPUTE["charge"]


def test_unknown_event_types_are_ignored() -> None:
    plan_event = stripe_event("plan.created", {"id": "price_1", "object": "plan"})
    mapped = facts_from_stripe_event(plan_event)
    assert mapped.ignored and mapped.facts == () and mapped.event_type == "plan.created"


@pytest.mark.parametrize(
    "event",
    [
        {"id": "evt_1", "data": {"object": PAYMENT_INTENT}},
        stripe_event("payment_intent.succeeded", PAYMENT_INTENT | {"id": None}),
        stripe_event("payment_intent.succeeded", PAYMENT_INTENT | {"amount_received": "1099"}),
        stripe_event("refund.updated", REFUND | {"status": "exploded"}),
        stripe_event("charge.dispute.created", DISPUTE | {"amount": 10.5}),
        {"id": "evt_1", "type": "refund.created", "data": None},
    ],
    ids=["no-type", "no-id", "string-amount", "bad-refund-status", "float-amount", "no-data"],
)
def test_malformed_events_of_known_types_are_refused(event: dict[str, Any]) -> None:
    with pytest.raises(StripeEventMalformed):
        facts_from_stripe_event(event)
