"""Matching money that left at the gateway (refunds, disputes) against the ledger: each case with
its break type, evidence and heal; sort order enforced; every record in exactly one result."""

from __future__ import annotations

from dataclasses import replace

import pytest

from billkeep.reconciliation.matching import (
    DEFAULT_GRACE_PERIOD_MS,
    MatchConfig,
    MatchKind,
    MatchResult,
    UnsortedInput,
)
from billkeep.reconciliation.money_out import match_money_out
from billkeep.reconciliation.money_out_records import (
    GatewayReversal,
    LearnMoneyOut,
    LedgerRefund,
    ReversalKind,
    ReversalStatus,
)

NOW_MS = 1_767_225_600_000
OLD_MS = NOW_MS - 2 * DEFAULT_GRACE_PERIOD_MS
YOUNG_MS = NOW_MS - 60_000
CONFIG = MatchConfig(now_ms=NOW_MS)


def refund(reference: str = "re_1", **changes: object) -> GatewayReversal:
    record = GatewayReversal(
        kind=ReversalKind.REFUND,
        reference=reference,
        payment_reference="pi_1",
        command_ref=None,
        amount_minor=300,
        currency="usd",
        status=ReversalStatus.SUCCEEDED,
        created_ms=OLD_MS,
        charge_id="ch_local_1",
        charge_currency="usd",
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def dispute(reference: str = "dp_1", **changes: object) -> GatewayReversal:
    return refund(reference, kind=ReversalKind.DISPUTE, amount_minor=1_000, **changes)


def booked(reference: str = "re_1", **changes: object) -> LedgerRefund:
    record = LedgerRefund("ch_local_1", "rf_1", reference, 300, "usd", OLD_MS)
    return replace(record, **changes)  # type: ignore[arg-type]


def one(gateway: list[GatewayReversal], ledger: list[LedgerRefund]) -> MatchResult:
    results = list(match_money_out(gateway, ledger, CONFIG))
    assert len(results) == 1, results
    return results[0]


def test_a_dashboard_refund_without_entry_is_missing_in_ledger_and_learned() -> None:
    result = one([refund(command_ref=None)], [])
    assert result.kind is MatchKind.MISSING_IN_LEDGER
    assert result.gateway_reference == "re_1" and result.resource_id == "ch_local_1"
    assert result.match_key == "refund:re_1"
    assert result.heals == (
        LearnMoneyOut("ch_local_1", ReversalKind.REFUND, "re_1", "pi_1", 300, None),
    )


def test_a_dispute_without_entry_is_learned_and_one_with_its_entry_matches() -> None:
    missing = one([dispute()], [])
    assert missing.kind is MatchKind.MISSING_IN_LEDGER
    assert missing.heals == (
        LearnMoneyOut("ch_local_1", ReversalKind.DISPUTE, "dp_1", "pi_1", 1_000, None),
    )
    posted = one([dispute(posted_minor=1_000)], [])
    assert posted.kind is MatchKind.MATCHED and not posted.heals


def test_a_billkeep_refund_found_at_the_gateway_matches() -> None:
    result = one([refund(posted_minor=300)], [booked()])
    assert result.kind is MatchKind.MATCHED


@pytest.mark.parametrize(
    ("gateway", "ledger", "expected", "actual"),
    [
        (refund(amount_minor=250, posted_minor=300), [booked()], 300, 250),  # vs the refund row
        (refund(posted_minor=200), [], 200, 300),  # a dashboard refund posted for another amount
    ],
)
def test_refund_amounts_differing_are_an_amount_mismatch(
    gateway: GatewayReversal, ledger: list[LedgerRefund], expected: int, actual: int
) -> None:
    result = one([gateway], ledger)
    assert result.kind is MatchKind.AMOUNT_MISMATCH
    assert result.expected == {"amount_minor": expected}
    assert result.actual == {"amount_minor": actual}
    assert not result.heals


def test_a_billkeep_refund_the_gateway_does_not_have_is_missing_at_gateway_once_old() -> None:
    old = one([], [booked()])
    assert old.kind is MatchKind.MISSING_AT_GATEWAY and not old.heals
    assert old.gateway_reference == "re_1" and old.resource_id == "ch_local_1"
    young = one([], [booked(created_ms=YOUNG_MS)])
    assert young.kind is MatchKind.PENDING_TIMING


def test_a_refund_while_a_billkeep_refund_is_in_flight_is_pending_timing_not_learned() -> None:
    result = one([refund(refund_in_flight=True)], [])
    assert result.kind is MatchKind.PENDING_TIMING and not result.heals
    assert result.actual["refund_in_flight"] is True


@pytest.mark.parametrize(
    ("gateway", "ledger", "kind"),
    [
        (refund(status=ReversalStatus.PENDING), [], MatchKind.PENDING_TIMING),
        (refund(status=ReversalStatus.FAILED), [], MatchKind.NO_MONEY_MOVED),
        (refund(status=ReversalStatus.FAILED, posted_minor=300), [], MatchKind.STATUS_MISMATCH),
        (
            refund(status=ReversalStatus.FAILED, posted_minor=300),
            [booked()],
            MatchKind.STATUS_MISMATCH,
        ),
        (refund(currency="eur"), [booked()], MatchKind.CURRENCY_MISMATCH),
        (refund(currency="eur"), [], MatchKind.CURRENCY_MISMATCH),
        (refund(charge_id=None, charge_currency=None), [], MatchKind.MISSING_IN_LEDGER),
        (
            refund(charge_id=None, charge_currency=None, created_ms=YOUNG_MS),
            [],
            MatchKind.PENDING_TIMING,
        ),
    ],
)
def test_other_cases_are_classified_without_a_heal(
    gateway: GatewayReversal, ledger: list[LedgerRefund], kind: MatchKind
) -> None:
    result = one([gateway], ledger)
    assert result.kind is kind and not result.heals


def test_every_record_appears_once_in_key_order() -> None:
    gateway = [dispute("dp_1"), refund("re_1", posted_minor=300), refund("re_3")]
    ledger = [booked("re_1"), booked("re_2")]
    results = list(match_money_out(gateway, ledger, CONFIG))
    assert [(r.match_key, r.kind) for r in results] == [
        ("dispute:dp_1", MatchKind.MISSING_IN_LEDGER),
        ("refund:re_1", MatchKind.MATCHED),
        ("refund:re_2", MatchKind.MISSING_AT_GATEWAY),
        ("refund:re_3", MatchKind.MISSING_IN_LEDGER),
    ]


def test_unsorted_input_raises() -> None:
    with pytest.raises(UnsortedInput):
        list(match_money_out([refund("re_2"), refund("re_1")], [], CONFIG))
    with pytest.raises(UnsortedInput):
        list(match_money_out([], [booked("re_2"), booked("re_1")], CONFIG))
