"""The gateway-facing state of one payment, as a monotonic, order-independent state machine.

A local charge learns its gateway outcome from several sources: the API response, retries of the
same command, webhooks that arrive late, twice or out of order, and reconciliation. Each source
reports *facts*. `apply(state, fact)` folds one fact into the state so that the result depends only
on the *set* of facts seen, never on their order or multiplicity (the state is a join-semilattice,
`apply` is the join with the fact): any permutation of any fact sequence, with duplicates, ends in
the same state and therefore the same ledger effects. This is what makes invariant I8 ("a stale
webhook never moves an object backward") hold by construction.

Payment status order (a chain, so every pair of states has a join)::

    rank  status       reached by                                  implied lower facts
    0     pending      the initial state                           -
    1     processing   PaymentProcessing                           -
    2     failed       PaymentFailed                               processing
    3     succeeded    PaymentSucceeded, or any refund / dispute   processing

`failed` sits below `succeeded` on purpose: at Stripe a failed attempt leaves the intent in
`requires_payment_method`, from where it can still succeed, while `succeeded` is terminal. So a
success supersedes a failure, and a failure reported after a success is a late report of an earlier
attempt: it never flips `succeeded` back to `failed`. A refund or a dispute exists only for a
succeeded payment, so observing one implies `succeeded` even before PaymentSucceeded arrives.

Outcome of applying a fact to a state::

    fact                    state now                         outcome     state changes
    PaymentProcessing       pending                           applied     -> processing
    PaymentProcessing       processing/failed/succeeded       duplicate   no (already implied)
    PaymentFailed(f)        pending/processing                applied     -> failed, failures {f}
    PaymentFailed(f)        failed, f not yet known           applied     failures += {f}
    PaymentFailed(f)        failed, f known                   duplicate   no
    PaymentFailed(f)        succeeded                         stale       no (never flips back)
    PaymentSucceeded(a)     below succeeded, or amount None   applied     -> succeeded, amount a
    PaymentSucceeded(a)     succeeded with amount a           duplicate   no
    PaymentSucceeded(a)     succeeded with amount b != a      conflict    no
    RefundObserved(r)       r unknown                         applied     refund r added
    RefundObserved(r)       r known with a lower status       applied     r's status raised
    RefundObserved(r)       r known, same status / pending    duplicate   no (implied)
    RefundObserved(r)       r known with a higher status      stale       no
    RefundObserved(r)       r known with another amount       conflict    no
    DisputeOpened(d)        d unknown                         applied     dispute d added
    DisputeOpened(d)        d known with the same amount      duplicate   no
    DisputeOpened(d)        d known with another amount       conflict    no

Refund status order: pending (0) < canceled (1) < failed (2) < succeeded (3). Only succeeded refunds
count toward `amount_refunded_minor`. Canceled and failed are ranked (rather than left as siblings)
only so that the join is total; a canceled-after-failed report is `stale` like any lower report.

`conflict` marks facts that cannot all be true (two amounts for one payment, one refund with two
amounts, succeeded refunds or a dispute over the captured amount). Genuine gateway facts never
conflict; when forged or corrupt ones do, the state keeps what it had and the caller must surface
the conflict to a human. Conflicts are the one case where order can matter (whichever fact came
first is kept), which is why they are reported and never silently resolved.

In every outcome except `applied`, the returned state is the input state unchanged.

Ledger effects are derived from the state, never from events, and keyed by the business fact:
`payment:{reference}:succeeded`, `refund:{refund_id}`, `dispute:{dispute_id}`. `ledger_effects`
is monotone in the state order, so posting `ledger_effects(new) - ledger_effects(old)` after each
step (what `Applied.effects` holds) posts every effect exactly once whatever the fact order. Refund
and dispute effects wait until the captured amount is known, because the ledger cannot reverse a
payment it has not posted yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from billkeep.domain.money import parse_amount_minor

__all__ = [
    "Applied",
    "DisputeOpened",
    "DisputeRecord",
    "EffectKind",
    "Fact",
    "Failure",
    "LedgerEffect",
    "Outcome",
    "PaymentFailed",
    "PaymentProcessing",
    "PaymentState",
    "PaymentStatus",
    "PaymentSucceeded",
    "RefundObserved",
    "RefundRecord",
    "RefundStatus",
    "StripeEventFacts",
    "StripeEventMalformed",
    "apply",
    "apply_all",
    "facts_from_stripe_event",
    "is_at_most",
    "ledger_effects",
    "new_payment",
]


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


# The chain of the module docstring's table.
_PAYMENT_RANK: dict[PaymentStatus, int] = {
    PaymentStatus.PENDING: 0,
    PaymentStatus.PROCESSING: 1,
    PaymentStatus.FAILED: 2,
    PaymentStatus.SUCCEEDED: 3,
}


class RefundStatus(StrEnum):
    PENDING = "pending"
    CANCELED = "canceled"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


_REFUND_RANK: dict[RefundStatus, int] = {
    RefundStatus.PENDING: 0,
    RefundStatus.CANCELED: 1,
    RefundStatus.FAILED: 2,
    RefundStatus.SUCCEEDED: 3,
}


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    CONFLICT = "conflict"


class EffectKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"
    DISPUTE = "dispute"


# ----------------------------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True)
class PaymentProcessing:
    """The gateway is working on the payment (async methods); no money has moved yet."""


@dataclass(frozen=True, slots=True)
class PaymentSucceeded:
    amount_received_minor: int

    def __post_init__(self) -> None:
        parse_amount_minor(self.amount_received_minor, "amount_received_minor")


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    code: str
    message: str

    @property
    def failure(self) -> Failure:
        return Failure(self.code, self.message)


@dataclass(frozen=True, slots=True)
class RefundObserved:
    refund_id: str
    amount_minor: int
    status: RefundStatus = RefundStatus.SUCCEEDED

    def __post_init__(self) -> None:
        parse_amount_minor(self.amount_minor, "amount_minor")


@dataclass(frozen=True, slots=True)
class DisputeOpened:
    dispute_id: str
    amount_minor: int

    def __post_init__(self) -> None:
        parse_amount_minor(self.amount_minor, "amount_minor")


Fact = PaymentProcessing | PaymentSucceeded | PaymentFailed | RefundObserved | DisputeOpened


# ----------------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class RefundRecord:
    refund_id: str
    amount_minor: int
    status: RefundStatus


@dataclass(frozen=True, slots=True)
class DisputeRecord:
    dispute_id: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class PaymentState:
    """What is known about one payment intent. Build with `new_payment`, change with `apply`.

    `refunds` and `disputes` are kept sorted by id so that equal knowledge gives equal states.
    `failures` is only non-empty while the status is `failed` (a success supersedes them).
    """

    reference: str
    status: PaymentStatus = PaymentStatus.PENDING
    amount_received_minor: int | None = None
    failures: frozenset[Failure] = frozenset()
    refunds: tuple[RefundRecord, ...] = ()
    disputes: tuple[DisputeRecord, ...] = ()

    @property
    def amount_refunded_minor(self) -> int:
        return sum(r.amount_minor for r in self.refunds if r.status is RefundStatus.SUCCEEDED)

    @property
    def refunded(self) -> bool:
        """Fully refunded: every captured minor unit went back."""
        return (
            self.amount_received_minor is not None
            and self.amount_refunded_minor == self.amount_received_minor
        )

    @property
    def disputed(self) -> bool:
        return bool(self.disputes)

    def refund(self, refund_id: str) -> RefundRecord | None:
        return next((r for r in self.refunds if r.refund_id == refund_id), None)

    def dispute(self, dispute_id: str) -> DisputeRecord | None:
        return next((d for d in self.disputes if d.dispute_id == dispute_id), None)


@dataclass(frozen=True, slots=True)
class LedgerEffect:
    """A money effect the ledger must contain exactly once, keyed by the business fact."""

    key: str
    kind: EffectKind
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Applied:
    state: PaymentState
    outcome: Outcome
    # Effects that became due with this step (sorted by key); empty unless outcome is applied.
    effects: tuple[LedgerEffect, ...] = ()
    reason: str = ""


def new_payment(reference: str) -> PaymentState:
    if not reference:
        raise ValueError("a payment state needs the gateway reference it tracks")
    return PaymentState(reference=reference)


# ----------------------------------------------------------------------------------------- apply


def apply(state: PaymentState, fact: Fact) -> Applied:
    """Fold one fact into the state; see the module docstring for the outcome table."""
    match fact:
        case PaymentProcessing():
            result = _apply_processing(state)
        case PaymentFailed():
            result = _apply_failed(state, fact)
        case PaymentSucceeded():
            result = _apply_succeeded(state, fact)
        case RefundObserved():
            result = _apply_refund(state, fact)
        case DisputeOpened():
            result = _apply_dispute(state, fact)
        case _:  # pragma: no cover - the Fact union is closed; this guards untyped callers
            raise TypeError(f"not a payment fact: {fact!r}")
    if result.outcome is not Outcome.APPLIED:
        return result
    due = ledger_effects(result.state) - ledger_effects(state)
    return replace(result, effects=tuple(sorted(due, key=lambda e: e.key)))


def apply_all(state: PaymentState, facts: Iterable[Fact]) -> PaymentState:
    for fact in facts:
        state = apply(state, fact).state
    return state


def _unchanged(state: PaymentState, outcome: Outcome, reason: str) -> Applied:
    return Applied(state=state, outcome=outcome, reason=reason)


def _apply_processing(state: PaymentState) -> Applied:
    if state.status is not PaymentStatus.PENDING:
        return _unchanged(state, Outcome.DUPLICATE, f"processing is implied by {state.status}")
    return Applied(replace(state, status=PaymentStatus.PROCESSING), Outcome.APPLIED)


def _apply_failed(state: PaymentState, fact: PaymentFailed) -> Applied:
    if state.status is PaymentStatus.SUCCEEDED:
        return _unchanged(state, Outcome.STALE, "a failed attempt never undoes a success")
    if fact.failure in state.failures:
        return _unchanged(state, Outcome.DUPLICATE, "failure already known")
    failed = replace(state, status=PaymentStatus.FAILED, failures=state.failures | {fact.failure})
    return Applied(failed, Outcome.APPLIED)


def _apply_succeeded(state: PaymentState, fact: PaymentSucceeded) -> Applied:
    amount = fact.amount_received_minor
    if state.amount_received_minor is not None:
        if state.amount_received_minor == amount:
            return _unchanged(state, Outcome.DUPLICATE, "success already known")
        return _unchanged(
            state,
            Outcome.CONFLICT,
            f"amount received {amount} contradicts known {state.amount_received_minor}",
        )
    over = _over_captured_reason(state, amount)
    if over:
        return _unchanged(state, Outcome.CONFLICT, over)
    return Applied(_succeeded(state, amount_received_minor=amount), Outcome.APPLIED)


def _over_captured_reason(state: PaymentState, amount_minor: int) -> str:
    """Why refunds/disputes already known cannot fit in this captured amount ('' if they fit)."""
    if state.amount_refunded_minor > amount_minor:
        return f"succeeded refunds {state.amount_refunded_minor} exceed captured {amount_minor}"
    largest_dispute = max((d.amount_minor for d in state.disputes), default=0)
    if largest_dispute > amount_minor:
        return f"dispute amount {largest_dispute} exceeds captured {amount_minor}"
    return ""


def _succeeded(state: PaymentState, **changes: Any) -> PaymentState:
    # A success supersedes failed attempts: their details stop being part of the state.
    return replace(state, status=PaymentStatus.SUCCEEDED, failures=frozenset(), **changes)


def _apply_refund(state: PaymentState, fact: RefundObserved) -> Applied:
    known = state.refund(fact.refund_id)
    if known is not None and known.amount_minor != fact.amount_minor:
        return _unchanged(state, Outcome.CONFLICT, f"refund {fact.refund_id} seen with two amounts")
    if known is not None:
        verdict = _refund_status_verdict(known.status, fact.status)
        if verdict is not None:
            return _unchanged(state, verdict, f"refund {fact.refund_id} is {known.status}")
    record = RefundRecord(fact.refund_id, fact.amount_minor, fact.status)
    others = tuple(r for r in state.refunds if r.refund_id != fact.refund_id)
    candidate = _succeeded(state, refunds=tuple(sorted((*others, record), key=_refund_id)))
    cap = state.amount_received_minor
    if cap is not None and candidate.amount_refunded_minor > cap:
        return _unchanged(
            state,
            Outcome.CONFLICT,
            f"refunds would total {candidate.amount_refunded_minor} of a {cap} payment",
        )
    return Applied(candidate, Outcome.APPLIED)


def _refund_id(record: RefundRecord) -> str:
    return record.refund_id


def _refund_status_verdict(known: RefundStatus, reported: RefundStatus) -> Outcome | None:
    """None when the report raises the refund's status; otherwise why it changes nothing."""
    if _REFUND_RANK[reported] > _REFUND_RANK[known]:
        return None
    if reported is known or reported is RefundStatus.PENDING:
        return Outcome.DUPLICATE  # pending is implied by every later refund status
    return Outcome.STALE


def _apply_dispute(state: PaymentState, fact: DisputeOpened) -> Applied:
    known = state.dispute(fact.dispute_id)
    if known is not None:
        if known.amount_minor == fact.amount_minor:
            return _unchanged(state, Outcome.DUPLICATE, f"dispute {fact.dispute_id} known")
        return _unchanged(
            state, Outcome.CONFLICT, f"dispute {fact.dispute_id} seen with two amounts"
        )
    cap = state.amount_received_minor
    if cap is not None and fact.amount_minor > cap:
        return _unchanged(
            state, Outcome.CONFLICT, f"dispute amount {fact.amount_minor} exceeds captured {cap}"
        )
    record = DisputeRecord(fact.dispute_id, fact.amount_minor)
    disputes = tuple(sorted((*state.disputes, record), key=lambda d: d.dispute_id))
    return Applied(_succeeded(state, disputes=disputes), Outcome.APPLIED)


# ------------------------------------------------------------------------------ order and effects


def is_at_most(lower: PaymentState, upper: PaymentState) -> bool:
    """The semilattice order: True when `upper` knows everything `lower` knows (lower <= upper)."""
    if lower.reference != upper.reference:
        return False
    if _PAYMENT_RANK[lower.status] > _PAYMENT_RANK[upper.status]:
        return False
    if upper.status is PaymentStatus.FAILED and not lower.failures <= upper.failures:
        return False
    if lower.amount_received_minor not in (None, upper.amount_received_minor):
        return False
    return _refunds_at_most(lower, upper) and set(lower.disputes) <= set(upper.disputes)


def _refunds_at_most(lower: PaymentState, upper: PaymentState) -> bool:
    for refund in lower.refunds:
        later = upper.refund(refund.refund_id)
        if later is None or later.amount_minor != refund.amount_minor:
            return False
        if _REFUND_RANK[later.status] < _REFUND_RANK[refund.status]:
            return False
    return True


def ledger_effects(state: PaymentState) -> frozenset[LedgerEffect]:
    """Every money effect the ledger must hold for this state (monotone in `is_at_most`)."""
    captured = state.amount_received_minor
    if state.status is not PaymentStatus.SUCCEEDED or captured is None:
        return frozenset()
    effects = {LedgerEffect(f"payment:{state.reference}:succeeded", EffectKind.PAYMENT, captured)}
    effects.update(
        LedgerEffect(f"refund:{r.refund_id}", EffectKind.REFUND, r.amount_minor)
        for r in state.refunds
        if r.status is RefundStatus.SUCCEEDED
    )
    effects.update(
        LedgerEffect(f"dispute:{d.dispute_id}", EffectKind.DISPUTE, d.amount_minor)
        for d in state.disputes
    )
    return frozenset(effects)


# ------------------------------------------------------------------------------- Stripe mapping


class StripeEventMalformed(ValueError):
    """A known Stripe event type whose object lacks a field the mapping needs."""


@dataclass(frozen=True, slots=True)
class StripeEventFacts:
    """What one Stripe event says about one payment intent.

    `reference` is the payment intent id the facts concern; it is None when the object does not
    name one (a refund or dispute on a legacy charge): the caller then resolves `charge_id`.
    `ignored` is True for event types this state machine does not consume.
    `refunds_incomplete` is True when a charge.refunded event reports refunded money without the
    full list of refund objects: the caller should list the charge's refunds to learn them by id.
    """

    event_id: str
    event_type: str
    reference: str | None
    charge_id: str | None
    facts: tuple[Fact, ...]
    ignored: bool = False
    refunds_incomplete: bool = False


_STRIPE_REFUND_STATUS: dict[str, RefundStatus] = {
    "pending": RefundStatus.PENDING,
    # requires_action: the customer must act before money moves; nothing counted yet.
    "requires_action": RefundStatus.PENDING,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELED,
}


def facts_from_stripe_event(event: Mapping[str, Any]) -> StripeEventFacts:
    """Translate a Stripe event envelope (`{id, type, data: {object}}`) into payment facts."""
    event_type = _require_str(event, "type")
    event_id = event.get("id")
    event_id = event_id if isinstance(event_id, str) else ""
    mapper = _STRIPE_MAPPERS.get(event_type)
    if mapper is None:
        return StripeEventFacts(event_id, event_type, None, None, (), ignored=True)
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise StripeEventMalformed(f"{event_type}: data.object must be an object")
    return mapper(event_id, event_type, obj)


def _from_intent(event_id: str, event_type: str, intent: Mapping[str, Any]) -> StripeEventFacts:
    reference = _require_str(intent, "id")
    facts: tuple[Fact, ...]
    if event_type == "payment_intent.succeeded":
        received = intent.get("amount_received") or intent.get("amount")
        facts = (PaymentSucceeded(_require_int_value(received, "amount_received")),)
    elif event_type == "payment_intent.payment_failed":
        facts = (_failure_from_intent(intent),)
    else:
        facts = (PaymentProcessing(),)
    latest_charge = intent.get("latest_charge")
    charge_id = latest_charge if isinstance(latest_charge, str) else None
    return StripeEventFacts(event_id, event_type, reference, charge_id, facts)


def _failure_from_intent(intent: Mapping[str, Any]) -> PaymentFailed:
    error = intent.get("last_payment_error")
    error = error if isinstance(error, Mapping) else {}
    # decline_code is the more specific reason (insufficient_funds under card_declined).
    code = error.get("decline_code") or error.get("code") or error.get("type") or "payment_failed"
    message = error.get("message") or ""
    return PaymentFailed(code=str(code), message=str(message))


def _from_charge(event_id: str, event_type: str, charge: Mapping[str, Any]) -> StripeEventFacts:
    charge_id = _require_str(charge, "id")
    intent = charge.get("payment_intent")
    reference = intent if isinstance(intent, str) else None
    # A refunded charge was captured; amount_captured is 0 on uncaptured example objects only.
    captured = charge.get("amount_captured") or charge.get("amount")
    facts: list[Fact] = [PaymentSucceeded(_require_int_value(captured, "amount_captured"))]
    refunds_list = charge.get("refunds")
    listed: list[Any] = []
    has_more = False
    if isinstance(refunds_list, Mapping):
        listed = list(refunds_list.get("data") or [])
        has_more = bool(refunds_list.get("has_more"))
    facts.extend(_refund_fact(refund) for refund in listed if isinstance(refund, Mapping))
    # Stripe's amount_refunded counts pending refunds too, so compare with those included.
    listed_total = sum(
        f.amount_minor
        for f in facts
        if isinstance(f, RefundObserved)
        and f.status in (RefundStatus.PENDING, RefundStatus.SUCCEEDED)
    )
    reported_total = charge.get("amount_refunded")
    incomplete = has_more or (isinstance(reported_total, int) and reported_total > listed_total)
    return StripeEventFacts(
        event_id, event_type, reference, charge_id, tuple(facts), refunds_incomplete=incomplete
    )


def _from_refund(event_id: str, event_type: str, refund: Mapping[str, Any]) -> StripeEventFacts:
    return StripeEventFacts(
        event_id,
        event_type,
        _optional_str(refund, "payment_intent"),
        _optional_str(refund, "charge"),
        (_refund_fact(refund),),
    )


def _refund_fact(refund: Mapping[str, Any]) -> RefundObserved:
    raw_status = refund.get("status")
    status = _STRIPE_REFUND_STATUS.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        raise StripeEventMalformed(f"refund status {raw_status!r} is not a Stripe refund status")
    return RefundObserved(
        refund_id=_require_str(refund, "id"),
        amount_minor=_require_int_value(refund.get("amount"), "refund.amount"),
        status=status,
    )


def _from_dispute(event_id: str, event_type: str, dispute: Mapping[str, Any]) -> StripeEventFacts:
    fact = DisputeOpened(
        dispute_id=_require_str(dispute, "id"),
        amount_minor=_require_int_value(dispute.get("amount"), "dispute.amount"),
    )
    return StripeEventFacts(
        event_id,
        event_type,
        _optional_str(dispute, "payment_intent"),
        _optional_str(dispute, "charge"),
        (fact,),
    )


def _require_str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise StripeEventMalformed(f"field {key!r} must be a non-empty string")
    return value


def _optional_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _require_int_value(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise StripeEventMalformed(f"{name} must be a positive integer, got {value!r}")
    return value


_STRIPE_MAPPERS = {
    "payment_intent.succeeded": _from_intent,
    "payment_intent.payment_failed": _from_intent,
    "payment_intent.processing": _from_intent,
    "charge.refunded": _from_charge,
    "refund.created": _from_refund,
    "refund.updated": _from_refund,
    "charge.dispute.created": _from_dispute,
}
