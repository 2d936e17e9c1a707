"""Payment, settlement, refund and dispute effects, each applied through one ObjectWriter."""

from __future__ import annotations

from billkeep.gateways.simulator.cards import CardBehaviour, TestCard, find_card
from billkeep.gateways.simulator.errors import JsonObject, StripeError, invalid_request
from billkeep.gateways.simulator.fees import FeeSchedule
from billkeep.gateways.simulator.objects import (
    balance_transaction_object,
    charge_object,
    dispute_object,
    payment_intent_object,
    refund_object,
)
from billkeep.gateways.simulator.params import DisputeCreate, PaymentIntentCreate, RefundCreate
from billkeep.gateways.simulator.result import SimResponse
from billkeep.gateways.simulator.writer import ObjectWriter

__all__ = [
    "create_dispute",
    "create_payment_intent",
    "create_refund",
    "load",
    "settle_payment_intent",
]


def load(w: ObjectWriter, kind: str, object_id: str, *, param: str) -> JsonObject:
    stored = w.tx.get_object(kind, object_id)
    if stored is None:
        raise invalid_request(
            f"No such {kind}: '{object_id}'", code="resource_missing", param=param
        )
    return stored.obj


def _card_for(payment_method: str) -> TestCard:
    card = find_card(payment_method)
    if card is None:
        raise invalid_request(
            f"No such PaymentMethod: '{payment_method}'",
            code="resource_missing",
            param="payment_method",
        )
    return card


def _book_charge(w: ObjectWriter, charge: JsonObject, fees: FeeSchedule) -> None:
    """A succeeded charge gets its balance transaction (amount, fee, net)."""
    txn_id, seq = w.new_id("txn")
    txn = balance_transaction_object(
        txn_id,
        w.now_s,
        amount=charge["amount"],
        fee=fees.fee_for(charge["amount"]),
        currency=charge["currency"],
        source=charge["id"],
        type_="charge",
        description=charge["description"],
    )
    w.insert("balance_transaction", txn, seq, ref=charge["id"], type_="charge")
    charge["balance_transaction"] = txn_id


def _decline_error(intent: JsonObject, card: TestCard) -> StripeError:
    return StripeError(
        402,
        "card_error",
        card.message or "Your card was declined.",
        code="card_declined",
        decline_code=card.decline_code,
        payment_intent=intent,
    )


def _last_payment_error(card: TestCard, charge_id: str) -> JsonObject:
    return {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": card.decline_code,
        "message": card.message,
        "charge": charge_id,
        "param": None,
        "payment_method": {"id": card.payment_method, "object": "payment_method", "type": "card"},
    }


def _confirm(
    w: ObjectWriter,
    intent: JsonObject,
    card: TestCard,
    fees: FeeSchedule,
    async_settle_ms: int | None,
) -> SimResponse:
    charge_id, charge_seq = w.new_id("ch")
    status = {
        CardBehaviour.SUCCEED: "succeeded",
        CardBehaviour.DECLINE: "failed",
        CardBehaviour.ASYNC: "pending",
    }[card.behaviour]
    charge = charge_object(
        charge_id, w.now_s, intent=intent, card=card, status=status, balance_transaction=None
    )
    intent["latest_charge"] = charge_id
    settle_at_ms: int | None = None
    if card.behaviour is CardBehaviour.SUCCEED:
        _book_charge(w, charge, fees)
        intent.update(status="succeeded", amount_received=intent["amount"])
    elif card.behaviour is CardBehaviour.DECLINE:
        intent.update(
            status="requires_payment_method",
            last_payment_error=_last_payment_error(card, charge_id),
        )
    else:
        intent.update(status="processing", processing={"type": "card"})
        settle_at_ms = w.now_ms + async_settle_ms if async_settle_ms else None
    w.insert("charge", charge, charge_seq, ref=intent["id"])
    w.save(intent, settle_at_ms=settle_at_ms)
    event_type = {
        "succeeded": "payment_intent.succeeded",
        "failed": "payment_intent.payment_failed",
        "pending": "payment_intent.processing",
    }[status]
    w.emit(event_type, intent)
    if card.behaviour is CardBehaviour.DECLINE:
        return SimResponse.from_error(_decline_error(intent, card))
    return SimResponse.ok(intent)


def create_payment_intent(
    w: ObjectWriter, req: PaymentIntentCreate, fees: FeeSchedule, async_settle_ms: int | None
) -> SimResponse:
    if req.customer is not None:
        load(w, "customer", req.customer, param="customer")
    card = _card_for(req.payment_method) if req.payment_method is not None else None
    if req.confirm and card is None:
        raise invalid_request(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            code="payment_intent_unexpected_state",
            param="payment_method",
        )
    intent_id, seq = w.new_id("pi")
    status = "requires_confirmation" if card is not None else "requires_payment_method"
    intent = payment_intent_object(
        intent_id,
        w.now_s,
        amount=req.amount,
        currency=req.currency,
        customer=req.customer,
        payment_method=req.payment_method,
        description=req.description,
        metadata=dict(req.metadata),
        status=status,
    )
    w.insert("payment_intent", intent, seq, ref=req.customer)
    if not req.confirm or card is None:
        return SimResponse.ok(intent)
    return _confirm(w, intent, card, fees, async_settle_ms)


def settle_payment_intent(w: ObjectWriter, intent_id: str, fees: FeeSchedule) -> JsonObject:
    """Finish an async payment: processing -> succeeded, the charge captured and booked."""
    intent = load(w, "payment_intent", intent_id, param="id")
    if intent["status"] != "processing":
        raise invalid_request(
            f"PaymentIntent {intent_id} is {intent['status']}, not processing.",
            code="payment_intent_unexpected_state",
        )
    charge = load(w, "charge", intent["latest_charge"], param="latest_charge")
    charge.update(status="succeeded", paid=True, captured=True, amount_captured=charge["amount"])
    card = _card_for(charge["payment_method"])
    charge["outcome"] = charge_object(
        charge["id"],
        w.now_s,
        intent=intent,
        card=card,
        status="succeeded",
        balance_transaction=None,
    )["outcome"]
    _book_charge(w, charge, fees)
    w.save(charge)
    intent.update(status="succeeded", amount_received=intent["amount"], processing=None)
    w.save(intent, settle_at_ms=None)
    w.emit("payment_intent.succeeded", intent)
    return intent


def _refundable_charge(w: ObjectWriter, req: RefundCreate) -> JsonObject:
    if req.charge is not None:
        charge = load(w, "charge", req.charge, param="charge")
    else:
        assert req.payment_intent is not None
        intent = load(w, "payment_intent", req.payment_intent, param="payment_intent")
        if intent["status"] != "succeeded" or intent["latest_charge"] is None:
            raise invalid_request(
                f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                code="charge_not_refundable" if intent["latest_charge"] else "resource_missing",
                param="payment_intent",
            )
        charge = load(w, "charge", intent["latest_charge"], param="payment_intent")
    if charge["status"] != "succeeded":
        raise invalid_request(
            f"Charge {charge['id']} has not succeeded and cannot be refunded.",
            code="charge_not_refundable",
        )
    return charge


def _refund_amount(charge: JsonObject, requested: int | None) -> int:
    remaining = int(charge["amount"]) - int(charge["amount_refunded"])
    if remaining <= 0:
        raise invalid_request(
            f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
        )
    amount = remaining if requested is None else requested
    if amount > remaining:
        raise invalid_request(
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
            code="amount_too_large",
            param="amount",
        )
    return amount


def create_refund(w: ObjectWriter, req: RefundCreate) -> JsonObject:
    # The whole check-then-refund runs under BEGIN IMMEDIATE: concurrent refunds serialise here,
    # so the sum of refunds can never pass the captured amount.
    charge = _refundable_charge(w, req)
    amount = _refund_amount(charge, req.amount)
    refund_id, refund_seq = w.new_id("re")
    txn_id, txn_seq = w.new_id("txn")
    refund = refund_object(
        refund_id,
        w.now_s,
        charge=charge,
        amount=amount,
        metadata=dict(req.metadata),
        reason=req.reason,
        balance_transaction=txn_id,
    )
    txn = balance_transaction_object(
        txn_id,
        w.now_s,
        amount=-amount,
        fee=0,
        currency=charge["currency"],
        source=refund_id,
        type_="refund",
        description="REFUND FOR CHARGE",
    )
    w.insert("refund", refund, refund_seq, ref=charge["payment_intent"])
    w.insert("balance_transaction", txn, txn_seq, ref=refund_id, type_="refund")
    previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
    charge["amount_refunded"] = int(charge["amount_refunded"]) + amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    charge["refunds"]["data"] = [refund, *charge["refunds"]["data"]][:10]
    w.save(charge)
    w.emit("refund.created", refund)
    w.emit("charge.refunded", charge, previous)
    return refund


def create_dispute(w: ObjectWriter, req: DisputeCreate) -> JsonObject:
    if req.charge is not None:
        charge = load(w, "charge", req.charge, param="charge")
    else:
        assert req.payment_intent is not None
        intent = load(w, "payment_intent", req.payment_intent, param="payment_intent")
        if intent["latest_charge"] is None:
            raise invalid_request("This PaymentIntent has no charge.", param="payment_intent")
        charge = load(w, "charge", intent["latest_charge"], param="payment_intent")
    if charge["status"] != "succeeded" or charge["disputed"]:
        raise invalid_request(
            f"Charge {charge['id']} cannot be disputed (not succeeded or already disputed).",
            param="charge",
        )
    amount = int(charge["amount"]) if req.amount is None else req.amount
    if amount > int(charge["amount"]):
        raise invalid_request("Dispute amount exceeds the charge.", param="amount")
    dispute_id, seq = w.new_id("dp")
    dispute = dispute_object(dispute_id, w.now_s, charge=charge, amount=amount, reason=req.reason)
    w.insert("dispute", dispute, seq, ref=charge["payment_intent"])
    charge["disputed"] = True
    w.save(charge)
    w.emit("charge.dispute.created", dispute)
    return dispute
