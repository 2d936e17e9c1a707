"""Reconciliation matching: each break type with its evidence, heals, timing, streaming bounds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billkeep.reconciliation.matching import (
    BREAK_KINDS,
    DEFAULT_GRACE_PERIOD_MS,
    FinalizeCharge,
    GatewayRecord,
    GatewayStatus,
    GroupTooLarge,
    LedgerRecord,
    LedgerStatus,
    MatchConfig,
    MatchKind,
    MatchResult,
    PostFee,
    UnsortedInput,
    gateway_match_key,
    ledger_match_key,
    match_records,
    summarize,
)

NOW_MS = 1_767_225_600_000
OLD_MS = NOW_MS - 2 * DEFAULT_GRACE_PERIOD_MS
YOUNG_MS = NOW_MS - 60_000
CONFIG = MatchConfig(now_ms=NOW_MS)


def gateway(
    reference: str = "pi_1",
    command_ref: str | None = "cmd_1",
    *,
    amount_minor: int = 1000,
    currency: str = "usd",
    status: GatewayStatus = GatewayStatus.SUCCEEDED,
    created_ms: int = OLD_MS,
    fee_minor: int | None = None,
) -> GatewayRecord:
    return GatewayRecord(
        reference, command_ref, amount_minor, currency, status, created_ms, fee_minor
    )


def ledger(
    resource_id: str = "ch_1",
    command_ref: str = "cmd_1",
    gateway_reference: str | None = "pi_1",
    *,
    amount_minor: int = 1000,
    currency: str = "usd",
    status: LedgerStatus = LedgerStatus.SUCCEEDED,
    created_ms: int = OLD_MS,
    fee_posted: bool = True,
) -> LedgerRecord:
    return LedgerRecord(
        resource_id,
        command_ref,
        gateway_reference,
        amount_minor,
        currency,
        status,
        created_ms,
        fee_posted,
    )


def run(
    gateway_records: Iterable[GatewayRecord],
    ledger_records: Iterable[LedgerRecord],
    config: MatchConfig = CONFIG,
) -> list[MatchResult]:
    return list(match_records(gateway_records, ledger_records, config))


def only(results: list[MatchResult]) -> MatchResult:
    assert len(results) == 1, results
    return results[0]


# ------------------------------------------------------------------------------ matched pairs


def test_same_payment_on_both_sides_is_matched() -> None:
    result = only(run([gateway(fee_minor=59)], [ledger(fee_posted=True)]))
    assert result.kind is MatchKind.MATCHED and not result.is_break
    assert result.gateway_reference == "pi_1" and result.resource_id == "ch_1"


def test_failed_on_both_sides_is_matched() -> None:
    declined = gateway(status=GatewayStatus.REQUIRES_PAYMENT_METHOD)
    result = only(run([declined], [ledger(status=LedgerStatus.FAILED)]))
    assert result.kind is MatchKind.MATCHED


def test_a_failed_attempt_before_the_success_moved_no_money() -> None:
    first = gateway("pi_a", status=GatewayStatus.FAILED, created_ms=OLD_MS - 10)
    second = gateway("pi_b")
    results = run([first, second], [ledger(gateway_reference="pi_b")])
    assert [r.kind for r in results] == [MatchKind.MATCHED, MatchKind.NO_MONEY_MOVED]
    assert not results[1].is_break


# ------------------------------------------------------------------------- each break type


def test_payment_made_outside_billkeep_is_missing_in_ledger() -> None:
    result = only(run([gateway("pi_outside", command_ref=None)], []))
    assert result.kind is MatchKind.MISSING_IN_LEDGER and result.match_key == "pi_outside"
    assert result.expected == {
        "reference": "pi_outside",
        "command_ref": None,
        "amount_minor": 1000,
        "currency": "usd",
        "status": GatewayStatus.SUCCEEDED,
    }
    assert result.actual == {"ledger_record": None}
    assert not result.healable


def test_ledger_charge_the_gateway_never_saw_is_missing_at_gateway() -> None:
    result = only(run([], [ledger()]))
    assert result.kind is MatchKind.MISSING_AT_GATEWAY
    assert result.expected["resource_id"] == "ch_1"
    assert result.expected["gateway_reference"] == "pi_1"
    assert result.actual == {"gateway_record": None}
    assert not result.healable


def test_ledger_reference_absent_from_its_group_is_not_paired_with_another_attempt() -> None:
    results = run([gateway("pi_other")], [ledger(gateway_reference="pi_1")])
    assert Counter(r.kind for r in results) == {
        MatchKind.MISSING_AT_GATEWAY: 1,
        MatchKind.MISSING_IN_LEDGER: 1,
    }


def test_amount_mismatch_carries_both_amounts() -> None:
    result = only(run([gateway(amount_minor=1200)], [ledger(amount_minor=1000)]))
    assert result.kind is MatchKind.AMOUNT_MISMATCH
    assert (result.expected, result.actual) == ({"amount_minor": 1000}, {"amount_minor": 1200})
    assert not result.healable


def test_currency_mismatch_wins_over_amount_mismatch() -> None:
    pair = run([gateway(currency="eur", amount_minor=5)], [ledger(currency="usd")])
    result = only(pair)
    assert result.kind is MatchKind.CURRENCY_MISMATCH
    assert (result.expected, result.actual) == ({"currency": "usd"}, {"currency": "eur"})


@pytest.mark.parametrize("local", [LedgerStatus.PENDING, LedgerStatus.UNKNOWN])
def test_unknown_local_outcome_the_gateway_shows_succeeded_is_healed_by_finalizing(
    local: LedgerStatus,
) -> None:
    # Outcome unknown (timeout): no reference yet, matched through the command ref.
    local_charge = ledger(gateway_reference=None, status=local, fee_posted=False)
    result = only(run([gateway(fee_minor=59)], [local_charge]))
    assert result.kind is MatchKind.STATUS_MISMATCH and result.healable
    assert (result.expected, result.actual) == ({"status": local}, {"status": "succeeded"})
    assert result.heals == (
        FinalizeCharge("ch_1", LedgerStatus.SUCCEEDED, "pi_1"),
        PostFee("ch_1", "pi_1", 59, "usd"),
    )
    assert [heal.action for heal in result.heals] == ["finalize_charge", "post_fee"]


def test_unknown_local_outcome_the_gateway_shows_failed_is_finalized_failed() -> None:
    local_charge = ledger(gateway_reference=None, status=LedgerStatus.UNKNOWN)
    declined = gateway(status=GatewayStatus.REQUIRES_PAYMENT_METHOD)
    result = only(run([declined], [local_charge]))
    assert result.heals == (FinalizeCharge("ch_1", LedgerStatus.FAILED, "pi_1"),)


def test_final_outcomes_that_disagree_are_not_healable() -> None:
    result = only(run([gateway()], [ledger(status=LedgerStatus.FAILED)]))
    assert result.kind is MatchKind.STATUS_MISMATCH and not result.healable
    assert (result.expected, result.actual) == ({"status": "failed"}, {"status": "succeeded"})


def test_unposted_gateway_fee_is_missing_in_ledger_and_healable() -> None:
    result = only(run([gateway(fee_minor=59)], [ledger(fee_posted=False)]))
    assert result.kind is MatchKind.MISSING_IN_LEDGER
    assert (result.expected, result.actual) == ({"fee_minor": 59}, {"fee_posted": False})
    assert result.heals == (PostFee("ch_1", "pi_1", 59, "usd"),)


def test_second_success_for_one_command_is_a_duplicate() -> None:
    first = gateway("pi_a", created_ms=OLD_MS)
    second = gateway("pi_b", created_ms=OLD_MS + 5)
    # The ledger recorded the later payment: the earlier one is the extra.
    results = run([first, second], [ledger(gateway_reference="pi_b")])
    assert [r.kind for r in results] == [MatchKind.MATCHED, MatchKind.DUPLICATE]
    duplicate = results[1]
    assert duplicate.gateway_reference == "pi_a" and not duplicate.healable
    assert duplicate.expected == {"succeeded_payments": 1}
    assert duplicate.actual == {"succeeded_payments": 2, "references": ("pi_a", "pi_b")}


def test_two_successes_without_a_ledger_record_are_one_missing_and_one_duplicate() -> None:
    results = run([gateway("pi_a"), gateway("pi_b", created_ms=OLD_MS + 5)], [])
    assert [(r.kind, r.gateway_reference) for r in results] == [
        (MatchKind.MISSING_IN_LEDGER, "pi_a"),
        (MatchKind.DUPLICATE, "pi_b"),
    ]


# ------------------------------------------------------------------------------------ timing


def test_one_sided_record_is_pending_timing_until_the_grace_period_ends() -> None:
    young_payment = gateway("pi_new", command_ref="cmd_new", created_ms=NOW_MS - 1000)
    young_charge = ledger(command_ref="cmd_x", created_ms=NOW_MS - 1000)
    early = run([young_payment], [young_charge])
    assert [r.kind for r in early] == [MatchKind.PENDING_TIMING] * 2
    assert early[0].actual == {
        "ledger_record": None,
        "age_ms": 1000,
        "grace_period_ms": DEFAULT_GRACE_PERIOD_MS,
    }
    later = MatchConfig(now_ms=NOW_MS + DEFAULT_GRACE_PERIOD_MS)
    assert [r.kind for r in run([young_payment], [young_charge], later)] == [
        MatchKind.MISSING_IN_LEDGER,
        MatchKind.MISSING_AT_GATEWAY,
    ]


def test_grace_period_is_configurable() -> None:
    strict = MatchConfig(now_ms=NOW_MS, grace_period_ms=0)
    assert only(run([], [ledger(created_ms=YOUNG_MS)], strict)).kind is (
        MatchKind.MISSING_AT_GATEWAY
    )


def test_both_sides_still_pending_is_pending_timing() -> None:
    local_charge = ledger(gateway_reference=None, status=LedgerStatus.PENDING)
    result = only(run([gateway(status=GatewayStatus.PROCESSING)], [local_charge]))
    assert result.kind is MatchKind.PENDING_TIMING and not result.healable


def test_locally_failed_charge_with_nothing_at_the_gateway_moved_no_money() -> None:
    result = only(run([], [ledger(gateway_reference=None, status=LedgerStatus.FAILED)]))
    assert result.kind is MatchKind.NO_MONEY_MOVED


# ------------------------------------------------------------------------- stream contract


def test_unsorted_input_is_refused() -> None:
    with pytest.raises(UnsortedInput):
        run([gateway("pi_2", "cmd_2"), gateway("pi_1", "cmd_1")], [])
    with pytest.raises(UnsortedInput):
        run([], [ledger(command_ref="cmd_2"), ledger(command_ref="cmd_1")])


def test_a_group_over_the_limit_is_refused() -> None:
    attempts = [gateway(f"pi_{n}", status=GatewayStatus.FAILED) for n in range(4)]
    with pytest.raises(GroupTooLarge):
        run(attempts, [], MatchConfig(now_ms=NOW_MS, max_group_size=3))


T = TypeVar("T")


@dataclass
class Progress:
    """How many input records the consumer has seen come back in results."""

    gateway: int = 0
    ledger: int = 0


def guarded(records: list[T], accounted: Progress, side: str, max_ahead: int) -> Iterator[T]:
    """Yield records, failing if the matcher pulls more than `max_ahead` beyond what it emitted."""
    for consumed, record in enumerate(records, start=1):
        ahead = consumed - getattr(accounted, side)
        if ahead > max_ahead:
            raise AssertionError(f"{side} stream read {ahead} records ahead of its results")
        yield record


def test_matching_reads_at_most_one_group_and_one_record_ahead() -> None:
    group_size = 3
    commands = [f"cmd_{n:04d}" for n in range(300)]
    # Gateway: three attempts per even command; ledger: one charge per command (odd ones missing).
    gateway_records = [
        gateway(f"pi_{c}_{k}", c, status=GatewayStatus.FAILED, created_ms=OLD_MS + k)
        for c in commands[::2]
        for k in range(group_size)
    ]
    ledger_records = [ledger(f"ch_{c}", c, None, status=LedgerStatus.FAILED) for c in commands]
    progress = Progress()
    max_ahead = group_size + 1  # the group being held plus the record that ended it
    results = match_records(
        guarded(gateway_records, progress, "gateway", max_ahead),
        guarded(ledger_records, progress, "ledger", max_ahead),
        CONFIG,
    )
    for result in results:
        progress.gateway += result.gateway is not None
        progress.ledger += result.ledger is not None
    assert (progress.gateway, progress.ledger) == (len(gateway_records), len(ledger_records))


# -------------------------------------------------------------------- generated reconciliations

_GATEWAY_STATUSES = st.sampled_from(list(GatewayStatus))
_LEDGER_STATUSES = st.sampled_from(list(LedgerStatus))


@st.composite
def books(draw: st.DrawFn) -> tuple[list[GatewayRecord], list[LedgerRecord]]:
    gateway_records: list[GatewayRecord] = []
    ledger_records: list[LedgerRecord] = []
    for n in range(draw(st.integers(0, 12))):
        command = f"cmd_{n:02d}"
        attempts = [
            gateway(
                f"pi_{n:02d}_{k}",
                draw(st.sampled_from([command, command, None])),
                amount_minor=draw(st.sampled_from([1000, 1000, 999])),
                status=draw(_GATEWAY_STATUSES),
                created_ms=draw(st.sampled_from([OLD_MS, YOUNG_MS])) + k,
                fee_minor=draw(st.sampled_from([None, 30])),
            )
            for k in range(draw(st.integers(0, 3)))
        ]
        gateway_records += attempts
        if draw(st.booleans()):
            known = [a.reference for a in attempts]
            ledger_records.append(
                ledger(
                    f"ch_{n:02d}",
                    command,
                    draw(st.sampled_from([None, *known])),
                    status=draw(_LEDGER_STATUSES),
                    created_ms=draw(st.sampled_from([OLD_MS, YOUNG_MS])),
                    fee_posted=draw(st.booleans()),
                )
            )
    gateway_records.sort(key=gateway_match_key)
    ledger_records.sort(key=ledger_match_key)
    return gateway_records, ledger_records


@given(books())
def test_every_record_is_classified_exactly_once(
    case: tuple[list[GatewayRecord], list[LedgerRecord]],
) -> None:
    gateway_records, ledger_records = case
    results = run(iter(gateway_records), iter(ledger_records))
    assert Counter(r.gateway for r in results if r.gateway) == Counter(gateway_records)
    assert Counter(r.ledger for r in results if r.ledger) == Counter(ledger_records)
    assert [r.match_key for r in results] == sorted(r.match_key for r in results)
    for result in results:
        assert result.gateway is not None or result.ledger is not None
        assert not result.healable or result.is_break


@given(books())
def test_at_most_one_success_per_command_escapes_the_duplicate_break(
    case: tuple[list[GatewayRecord], list[LedgerRecord]],
) -> None:
    gateway_records, ledger_records = case
    results = run(gateway_records, ledger_records)
    successes = Counter(
        gateway_match_key(g) for g in gateway_records if g.status is GatewayStatus.SUCCEEDED
    )
    duplicates = Counter(r.match_key for r in results if r.kind is MatchKind.DUPLICATE)
    assert duplicates == Counter({key: n - 1 for key, n in successes.items() if n > 1})


@given(books())
def test_summary_counts_the_stream(case: tuple[list[GatewayRecord], list[LedgerRecord]]) -> None:
    gateway_records, ledger_records = case
    results = run(gateway_records, ledger_records)
    summary = summarize(iter(results))
    assert (summary.gateway_records, summary.ledger_records) == (
        len(gateway_records),
        len(ledger_records),
    )
    assert summary.matched == sum(r.kind is MatchKind.MATCHED for r in results)
    assert set(summary.breaks) == BREAK_KINDS
    assert sum(summary.breaks.values()) == sum(r.is_break for r in results)
