"""The test payment methods the simulator knows, and what each one does to a payment."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["CardBehaviour", "TestCard", "find_card"]


class CardBehaviour(Enum):
    SUCCEED = "succeed"
    DECLINE = "decline"
    ASYNC = "async"  # billkeep's own: processing first, succeeded when settled


@dataclass(frozen=True, slots=True)
class TestCard:
    payment_method: str
    behaviour: CardBehaviour
    last4: str
    brand: str = "visa"
    decline_code: str | None = None
    message: str | None = None


_CARDS = {
    card.payment_method: card
    for card in (
        TestCard("pm_card_visa", CardBehaviour.SUCCEED, "4242"),
        TestCard(
            "pm_card_chargeDeclined",
            CardBehaviour.DECLINE,
            "0002",
            decline_code="generic_decline",
            message="Your card was declined.",
        ),
        TestCard(
            "pm_card_chargeDeclinedInsufficientFunds",
            CardBehaviour.DECLINE,
            "9995",
            decline_code="insufficient_funds",
            message="Your card has insufficient funds.",
        ),
        TestCard("pm_card_async", CardBehaviour.ASYNC, "3155"),
    )
}


def find_card(payment_method: str) -> TestCard | None:
    return _CARDS.get(payment_method)
