"""Classify money leaving at the gateway (refunds, disputes) against the ledger (pure, streaming).

Input is two streams sorted ascending by match key (`refund:{re}` / `dispute:{dp}`, the ledger
entry's key, see money_out_records): the gateway's refunds and disputes of the window, each joined
with what the ledger holds for it (its local charge, the posted entry's amount), and the refunds
billkeep made and recorded as succeeded in the window. A key appears at most once per side.

Results use the contract's break types (`expected` = what the books say, `actual` = the gateway):

    kind                case                                          heal
    matched             the entry is posted for the gateway's amount  -
    no_money_moved      a failed/canceled refund, nothing posted      -
    missing_in_ledger   a succeeded refund / a dispute of a billkeep  learn_money_out (as a
                        payment with no entry                         webhook would)
    missing_in_ledger   ... of a payment billkeep has no charge for   -
    missing_at_gateway  a succeeded billkeep refund the gateway does  -
                        not have, older than the grace period
    amount_mismatch     the gateway's amount differs from the ledger  -
    currency_mismatch   the currency differs from the charge's        -
    status_mismatch     the ledger counts money out of a refund the   -
                        gateway shows failed
    pending_timing      a refund still pending at the gateway; a      -
                        billkeep refund of the charge still awaiting
                        its answer (the unknown refund may be it); a
                        one-sided record younger than the grace period
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from billkeep.reconciliation.matching import (
    EvidenceValue,
    MatchConfig,
    MatchKind,
    MatchResult,
    UnsortedInput,
)
from billkeep.reconciliation.money_out_records import (
    GatewayReversal,
    LearnMoneyOut,
    LedgerRefund,
    ReversalKind,
    ReversalStatus,
)

__all__ = ["match_money_out"]

_R = TypeVar("_R", GatewayReversal, LedgerRefund)


def _sorted(records: Iterable[_R], side: str) -> Iterator[_R]:
    last: str | None = None
    for record in records:
        key = record.match_key
        if last is not None and key <= last:
            raise UnsortedInput(f"{side} stream: key {key!r} after {last!r}")
        last = key
        yield record


def match_money_out(
    gateway: Iterable[GatewayReversal], ledger: Iterable[LedgerRefund], config: MatchConfig
) -> Iterator[MatchResult]:
    """Merge the two key-sorted streams; every input record appears in exactly one result."""
    gateway_it, ledger_it = _sorted(gateway, "gateway"), _sorted(ledger, "ledger")
    g, lr = next(gateway_it, None), next(ledger_it, None)
    while g is not None or lr is not None:
        if lr is None or (g is not None and g.match_key < lr.match_key):
            assert g is not None
            yield _gateway_alone(g, config)
            g = next(gateway_it, None)
        elif g is None or lr.match_key < g.match_key:
            yield _ledger_alone(lr, config)
            lr = next(ledger_it, None)
        else:
            yield _pair(g, lr)
            g, lr = next(gateway_it, None), next(ledger_it, None)


def _result(
    kind: MatchKind,
    gateway: GatewayReversal | None,
    ledger: LedgerRefund | None,
    expected: dict[str, EvidenceValue] | None = None,
    actual: dict[str, EvidenceValue] | None = None,
    heal: LearnMoneyOut | None = None,
) -> MatchResult:
    key = gateway.match_key if gateway is not None else ledger.match_key if ledger else ""
    return MatchResult(
        kind, key, gateway, ledger, expected or {}, actual or {}, (heal,) if heal else ()
    )


def _pair(g: GatewayReversal, lr: LedgerRefund) -> MatchResult:
    if g.currency != lr.currency:
        return _result(
            MatchKind.CURRENCY_MISMATCH, g, lr, {"currency": lr.currency}, {"currency": g.currency}
        )
    if g.amount_minor != lr.amount_minor:
        return _result(
            MatchKind.AMOUNT_MISMATCH,
            g,
            lr,
            {"amount_minor": lr.amount_minor},
            {"amount_minor": g.amount_minor},
        )
    if g.status is ReversalStatus.FAILED:
        return _result(
            MatchKind.STATUS_MISMATCH, g, lr, {"status": "succeeded"}, {"status": g.status}
        )
    if g.status is ReversalStatus.PENDING:
        return _result(
            MatchKind.PENDING_TIMING, g, lr, {"status": "succeeded"}, {"status": g.status}
        )
    return _posted(g, lr)


def _posted(g: GatewayReversal, lr: LedgerRefund | None) -> MatchResult:
    """The gateway's money out against the posted entry (its amount, or its absence)."""
    if g.posted_minor is None:
        return _missing(g, lr)
    if g.posted_minor != g.amount_minor:
        return _result(
            MatchKind.AMOUNT_MISMATCH,
            g,
            lr,
            {"amount_minor": g.posted_minor},
            {"amount_minor": g.amount_minor},
        )
    return _result(MatchKind.MATCHED, g, lr)


def _missing(g: GatewayReversal, lr: LedgerRefund | None) -> MatchResult:
    expected = _gateway_fields(g)
    if g.charge_id is None or g.payment_reference is None:
        # Money out of a payment billkeep has no charge for: the payment itself is reported
        # (missing_in_ledger); there is nothing of billkeep's to post this against.
        return _result(MatchKind.MISSING_IN_LEDGER, g, lr, expected, {"charge": None})
    heal = LearnMoneyOut(
        g.charge_id, g.kind, g.reference, g.payment_reference, g.amount_minor, g.command_ref
    )
    return _result(MatchKind.MISSING_IN_LEDGER, g, lr, expected, {"ledger_entry": None}, heal)


def _gateway_alone(g: GatewayReversal, config: MatchConfig) -> MatchResult:
    if g.status is ReversalStatus.FAILED:
        if g.posted_minor is None:
            return _result(MatchKind.NO_MONEY_MOVED, g, None)
        return _result(
            MatchKind.STATUS_MISMATCH, g, None, {"status": "succeeded"}, {"status": g.status}
        )
    if g.charge_currency is not None and g.charge_currency != g.currency:
        return _result(
            MatchKind.CURRENCY_MISMATCH,
            g,
            None,
            {"currency": g.charge_currency},
            {"currency": g.currency},
        )
    if g.posted_minor is not None:
        return _posted(g, None)
    if g.status is ReversalStatus.PENDING:
        # Not gone yet: learned (and posted) once the gateway says it succeeded.
        return _result(
            MatchKind.PENDING_TIMING, g, None, _gateway_fields(g), {"ledger_entry": None}
        )
    if g.kind is ReversalKind.REFUND and g.refund_in_flight:
        # Never mistake a billkeep refund still being recorded for a dashboard refund: the
        # refund command records it (or a later run finds it unexplained once it has finished).
        return _result(
            MatchKind.PENDING_TIMING,
            g,
            None,
            _gateway_fields(g),
            {"ledger_entry": None, "refund_in_flight": True},
        )
    if g.charge_id is None and config.is_young(g.created_ms):
        # The charge may not know its payment's reference yet (its command is still running).
        return _result(
            MatchKind.PENDING_TIMING,
            g,
            None,
            _gateway_fields(g),
            {"charge": None, **_age(g.created_ms, config)},
        )
    return _missing(g, None)


def _ledger_alone(lr: LedgerRefund, config: MatchConfig) -> MatchResult:
    expected: dict[str, EvidenceValue] = {
        "refund_id": lr.refund_id,
        "gateway_reference": lr.gateway_reference,
        "amount_minor": lr.amount_minor,
        "currency": lr.currency,
    }
    if config.is_young(lr.created_ms):
        return _result(
            MatchKind.PENDING_TIMING,
            None,
            lr,
            expected,
            {"gateway_record": None, **_age(lr.created_ms, config)},
        )
    return _result(MatchKind.MISSING_AT_GATEWAY, None, lr, expected, {"gateway_record": None})


def _gateway_fields(g: GatewayReversal) -> dict[str, EvidenceValue]:
    return {
        "kind": g.kind.value,
        "reference": g.reference,
        "payment_reference": g.payment_reference,
        "amount_minor": g.amount_minor,
        "currency": g.currency,
        "status": g.status.value,
    }


def _age(created_ms: int, config: MatchConfig) -> dict[str, EvidenceValue]:
    return {"age_ms": config.now_ms - created_ms, "grace_period_ms": config.grace_period_ms}
