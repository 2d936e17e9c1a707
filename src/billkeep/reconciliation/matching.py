"""Classify reconciliation breaks between gateway payments and ledger charges (pure, streaming).

Input is two streams, each sorted ascending by its *match key*, consumed once and never
materialized: memory is bounded by one key group per side (at most `max_group_size` records).

Match key (the required sort order)
-----------------------------------
- Ledger record: its `command_ref` (every local charge comes from a command, so it always has one,
  even while its outcome is unknown and it has no gateway reference yet).
- Gateway record: `metadata[billkeep_command]` when present, else its own reference (`pi_...`). The
  two namespaces cannot collide (`cmd_...` vs `pi_...`), so a payment made outside billkeep forms
  its own group and surfaces as missing_in_ledger.

Both sides are compared as Python `str`, i.e. by code point. A PostgreSQL cursor must therefore
use `ORDER BY match_key COLLATE "C"` (SQLite's default BINARY collation already agrees). The
gateway's list API pages by creation time, not by metadata, so the reconciliation job stages the
period's gateway records (a table written page by page) and reads them back with the same ORDER BY;
`gateway_match_key` and `ledger_match_key` are the functions to compute the stored key with.
An out-of-order key raises `UnsortedInput` instead of producing wrong breaks.

Within a group, a ledger record that knows its gateway reference pairs with exactly that gateway
record; one that does not (outcome unknown) pairs with the group's best candidate (succeeded, then
processing, then the rest; oldest first). Every input record appears in exactly one result.

Results (`expected` = what the books say or should say, `actual` = what was found)
-----------------------------------------------------------------------------------
    kind                gateway / ledger              expected / actual evidence          heal
    matched             same money, same outcome      {} / {}                             -
    no_money_moved      a failed/abandoned attempt    {} / {}                             -
                        on one side only (not a break)
    missing_in_ledger   succeeded/processing payment  gateway fields / {ledger_record:None} -
                        with no ledger record, older
                        than the grace period
    missing_in_ledger   fee at the gateway, not       {fee_minor} / {fee_posted: False}    post_fee
                        posted in the ledger
    missing_at_gateway  ledger record (not failed)    ledger fields / {gateway_record:None}  -
                        with no gateway record, older
    amount_mismatch     amounts differ                {amount_minor} / {amount_minor}      -
    currency_mismatch   currencies differ             {currency} / {currency}              -
    status_mismatch     ledger pending/unknown, the   {status} / {status}                  finalize
                        gateway final                                                     (+post_fee)
    status_mismatch     final outcomes disagree       {status} / {status}                  -
    duplicate           a 2nd+ succeeded payment for  {succeeded_payments: 1} /            -
                        one command                   {succeeded_payments: n, references}
    pending_timing      one side missing but younger  present side / {age_ms,              -
                        than the grace period, or     grace_period_ms}
                        both sides still pending

Only local pending/unknown charges the gateway shows final, and unposted gateway fees, are
healable: every other break needs a human (refunding a duplicate, say, is a business decision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Generic, TypeVar

from billkeep.reconciliation.money_out_records import GatewayReversal, LearnMoneyOut, LedgerRefund

__all__ = [
    "BREAK_KINDS",
    "DEFAULT_GRACE_PERIOD_MS",
    "MAX_GROUP_SIZE",
    "EvidenceValue",
    "FinalizeCharge",
    "GatewayRecord",
    "GatewayStatus",
    "GroupTooLarge",
    "Heal",
    "LedgerRecord",
    "LedgerStatus",
    "MatchConfig",
    "MatchKind",
    "MatchResult",
    "PostFee",
    "ReconciliationSummary",
    "UnsortedInput",
    "gateway_match_key",
    "ledger_match_key",
    "match_records",
    "summarize",
]

# A card payment is final within seconds and webhooks retry within minutes; an hour leaves room
# for the recovery worker and for the gap between the ledger's and the gateway's creation times.
DEFAULT_GRACE_PERIOD_MS = 60 * 60 * 1000

# One command has one charge and a handful of gateway attempts; a group this large means a key
# collision or a runaway retry loop, and holding it would break the memory bound.
MAX_GROUP_SIZE = 64


class GatewayStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PROCESSING = "processing"
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    CANCELED = "canceled"


class LedgerStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"
    UNKNOWN = "unknown"


class MatchKind(StrEnum):
    MATCHED = "matched"
    NO_MONEY_MOVED = "no_money_moved"
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_AT_GATEWAY = "missing_at_gateway"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    DUPLICATE = "duplicate"
    PENDING_TIMING = "pending_timing"


BREAK_KINDS = frozenset(MatchKind) - {MatchKind.MATCHED, MatchKind.NO_MONEY_MOVED}

# The gateway statuses after which the payment can no longer take money.
_GATEWAY_NO_MONEY = frozenset(
    {GatewayStatus.FAILED, GatewayStatus.REQUIRES_PAYMENT_METHOD, GatewayStatus.CANCELED}
)
_LEDGER_UNDECIDED = frozenset({LedgerStatus.PENDING, LedgerStatus.UNKNOWN})

EvidenceValue = str | int | bool | None | tuple[str, ...]
Evidence = Mapping[str, EvidenceValue]


class UnsortedInput(ValueError):
    """A stream's match keys went backward: the caller's ORDER BY disagrees with the merge."""


class GroupTooLarge(ValueError):
    """More records share one match key than `max_group_size` allows."""


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    reference: str
    command_ref: str | None
    amount_minor: int
    currency: str
    status: GatewayStatus
    created_ms: int
    fee_minor: int | None = None
    amount_refunded_minor: int = 0


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    resource_id: str
    command_ref: str
    gateway_reference: str | None
    amount_minor: int
    currency: str
    status: LedgerStatus
    created_ms: int
    fee_posted: bool = False


@dataclass(frozen=True, slots=True)
class FinalizeCharge:
    """Record the gateway's final outcome on a local charge whose outcome was unknown."""

    action: ClassVar[str] = "finalize_charge"
    resource_id: str
    status: LedgerStatus
    reference: str


@dataclass(frozen=True, slots=True)
class PostFee:
    """Post the gateway's processing fee for a charge the ledger holds without it."""

    action: ClassVar[str] = "post_fee"
    resource_id: str
    reference: str
    amount_minor: int
    currency: str


Heal = FinalizeCharge | PostFee | LearnMoneyOut


@dataclass(frozen=True, slots=True)
class MatchResult:
    kind: MatchKind
    match_key: str
    # Payments pair GatewayRecord with LedgerRecord; money out (reconciliation.money_out) pairs
    # GatewayReversal with LedgerRefund.
    gateway: GatewayRecord | GatewayReversal | None
    ledger: LedgerRecord | LedgerRefund | None
    # Evidence dicts take no part in hashing (dicts cannot), only in equality.
    expected: Evidence = field(default_factory=dict, hash=False)
    actual: Evidence = field(default_factory=dict, hash=False)
    heals: tuple[Heal, ...] = ()

    @property
    def is_break(self) -> bool:
        return self.kind in BREAK_KINDS

    @property
    def healable(self) -> bool:
        return bool(self.heals)

    @property
    def gateway_reference(self) -> str | None:
        if self.gateway is not None:
            return self.gateway.reference
        return self.ledger.gateway_reference if self.ledger is not None else None

    @property
    def resource_id(self) -> str | None:
        if self.ledger is not None:
            return self.ledger.resource_id
        # A refund or dispute names the local charge it left (when billkeep has one).
        return self.gateway.charge_id if isinstance(self.gateway, GatewayReversal) else None


@dataclass(frozen=True, slots=True)
class MatchConfig:
    now_ms: int
    grace_period_ms: int = DEFAULT_GRACE_PERIOD_MS
    max_group_size: int = MAX_GROUP_SIZE

    def __post_init__(self) -> None:
        if self.grace_period_ms < 0 or self.max_group_size < 1:
            raise ValueError("grace period must be >= 0 and max group size >= 1")

    def is_young(self, created_ms: int) -> bool:
        return self.now_ms - created_ms < self.grace_period_ms


def gateway_match_key(record: GatewayRecord) -> str:
    return record.command_ref or record.reference


def ledger_match_key(record: LedgerRecord) -> str:
    return record.command_ref


# ---------------------------------------------------------------------------------- streaming

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class _Group(Generic[_R]):
    key: str
    records: tuple[_R, ...]


def _groups(
    records: Iterable[_R], key_of: Callable[[_R], str], side: str, max_group_size: int
) -> Iterator[_Group[_R]]:
    """Consecutive records sharing a key; reads one record past a group to know it has ended."""
    current_key: str | None = None
    bucket: list[_R] = []
    for record in records:
        key = key_of(record)
        if current_key is not None and key < current_key:
            raise UnsortedInput(f"{side} stream: key {key!r} after {current_key!r}")
        if key != current_key and bucket:
            yield _Group(current_key or "", tuple(bucket))
            bucket = []
        current_key = key
        bucket.append(record)
        if len(bucket) > max_group_size:
            raise GroupTooLarge(f"{side} stream: more than {max_group_size} records for {key!r}")
    if bucket and current_key is not None:
        yield _Group(current_key, tuple(bucket))


def match_records(
    gateway: Iterable[GatewayRecord], ledger: Iterable[LedgerRecord], config: MatchConfig
) -> Iterator[MatchResult]:
    """Merge two match-key-sorted streams and classify every record (see the module docstring)."""
    gateway_groups = _groups(gateway, gateway_match_key, "gateway", config.max_group_size)
    ledger_groups = _groups(ledger, ledger_match_key, "ledger", config.max_group_size)
    next_gateway = next(gateway_groups, None)
    next_ledger = next(ledger_groups, None)
    while next_gateway is not None or next_ledger is not None:
        if next_ledger is None or (next_gateway is not None and next_gateway.key < next_ledger.key):
            assert next_gateway is not None
            yield from _classify_group(next_gateway.key, next_gateway.records, (), config)
            next_gateway = next(gateway_groups, None)
        elif next_gateway is None or next_ledger.key < next_gateway.key:
            yield from _classify_group(next_ledger.key, (), next_ledger.records, config)
            next_ledger = next(ledger_groups, None)
        else:
            yield from _classify_group(
                next_gateway.key, next_gateway.records, next_ledger.records, config
            )
            next_gateway = next(gateway_groups, None)
            next_ledger = next(ledger_groups, None)


# ----------------------------------------------------------------------------- one key group


def _classify_group(
    key: str,
    gateway_records: tuple[GatewayRecord, ...],
    ledger_records: tuple[LedgerRecord, ...],
    config: MatchConfig,
) -> Iterator[MatchResult]:
    remaining = sorted(gateway_records, key=_preference)
    succeeded_refs = tuple(g.reference for g in remaining if g.status is GatewayStatus.SUCCEEDED)
    # Once one succeeded payment is accounted for, every other one for this command is a duplicate.
    success_accounted = False
    for ledger in sorted(ledger_records, key=lambda r: (r.created_ms, r.resource_id)):
        partner = _take_partner(ledger, remaining)
        if partner is None:
            yield _ledger_alone(key, ledger, config)
            continue
        success_accounted |= partner.status is GatewayStatus.SUCCEEDED
        yield _classify_pair(key, partner, ledger)
    for gateway in remaining:  # preference order: the oldest success is the one not duplicated
        if gateway.status is GatewayStatus.SUCCEEDED and success_accounted:
            yield _duplicate(key, gateway, succeeded_refs)
            continue
        success_accounted |= gateway.status is GatewayStatus.SUCCEEDED
        yield _gateway_alone(key, gateway, config)


def _preference(record: GatewayRecord) -> tuple[int, int, str]:
    rank = {GatewayStatus.SUCCEEDED: 0, GatewayStatus.PROCESSING: 1}.get(record.status, 2)
    return rank, record.created_ms, record.reference


def _take_partner(ledger: LedgerRecord, remaining: list[GatewayRecord]) -> GatewayRecord | None:
    """Remove and return the gateway record this ledger record stands for, if the group has it."""
    if ledger.gateway_reference is not None:
        # A known reference pairs with that payment only: pairing it with another attempt would
        # compare two different payments and hide that the referenced one is missing.
        for index, candidate in enumerate(remaining):
            if candidate.reference == ledger.gateway_reference:
                return remaining.pop(index)
        return None
    return remaining.pop(0) if remaining else None


def _classify_pair(key: str, gateway: GatewayRecord, ledger: LedgerRecord) -> MatchResult:
    def result(
        kind: MatchKind, expected: Evidence, actual: Evidence, heals: tuple[Heal, ...] = ()
    ) -> MatchResult:
        return MatchResult(kind, key, gateway, ledger, expected, actual, heals)

    if ledger.currency != gateway.currency:
        return result(
            MatchKind.CURRENCY_MISMATCH,
            {"currency": ledger.currency},
            {"currency": gateway.currency},
        )
    if ledger.amount_minor != gateway.amount_minor:
        return result(
            MatchKind.AMOUNT_MISMATCH,
            {"amount_minor": ledger.amount_minor},
            {"amount_minor": gateway.amount_minor},
        )
    outcome = _gateway_outcome(gateway.status)
    fee_heal = _fee_heal(gateway, ledger) if outcome is LedgerStatus.SUCCEEDED else ()
    if ledger.status in _LEDGER_UNDECIDED:
        if outcome is LedgerStatus.PENDING:  # neither side knows yet: nothing is wrong
            return result(MatchKind.PENDING_TIMING, {"status": ledger.status}, {"status": outcome})
        finalize = FinalizeCharge(ledger.resource_id, outcome, gateway.reference)
        return result(
            MatchKind.STATUS_MISMATCH,
            {"status": ledger.status},
            {"status": gateway.status},
            (finalize, *fee_heal),
        )
    if ledger.status is not outcome:
        return result(
            MatchKind.STATUS_MISMATCH, {"status": ledger.status}, {"status": gateway.status}
        )
    if fee_heal:
        return result(
            MatchKind.MISSING_IN_LEDGER,
            {"fee_minor": gateway.fee_minor},
            {"fee_posted": False},
            fee_heal,
        )
    return result(MatchKind.MATCHED, {}, {})


def _gateway_outcome(status: GatewayStatus) -> LedgerStatus:
    if status is GatewayStatus.SUCCEEDED:
        return LedgerStatus.SUCCEEDED
    if status in _GATEWAY_NO_MONEY:
        return LedgerStatus.FAILED
    return LedgerStatus.PENDING


def _fee_heal(gateway: GatewayRecord, ledger: LedgerRecord) -> tuple[PostFee, ...]:
    if ledger.fee_posted or not gateway.fee_minor:
        return ()
    return (PostFee(ledger.resource_id, gateway.reference, gateway.fee_minor, gateway.currency),)


def _duplicate(key: str, gateway: GatewayRecord, succeeded_refs: tuple[str, ...]) -> MatchResult:
    return MatchResult(
        MatchKind.DUPLICATE,
        key,
        gateway,
        None,
        {"succeeded_payments": 1},
        {"succeeded_payments": len(succeeded_refs), "references": succeeded_refs},
    )


def _gateway_alone(key: str, gateway: GatewayRecord, config: MatchConfig) -> MatchResult:
    if gateway.status in _GATEWAY_NO_MONEY:
        return MatchResult(MatchKind.NO_MONEY_MOVED, key, gateway, None)
    if config.is_young(gateway.created_ms):
        return MatchResult(
            MatchKind.PENDING_TIMING,
            key,
            gateway,
            None,
            _gateway_fields(gateway),
            {"ledger_record": None, **_age(gateway.created_ms, config)},
        )
    return MatchResult(
        MatchKind.MISSING_IN_LEDGER,
        key,
        gateway,
        None,
        _gateway_fields(gateway),
        {"ledger_record": None},
    )


def _ledger_alone(key: str, ledger: LedgerRecord, config: MatchConfig) -> MatchResult:
    if ledger.status is LedgerStatus.FAILED:
        return MatchResult(MatchKind.NO_MONEY_MOVED, key, None, ledger)
    if config.is_young(ledger.created_ms):
        return MatchResult(
            MatchKind.PENDING_TIMING,
            key,
            None,
            ledger,
            _ledger_fields(ledger),
            {"gateway_record": None, **_age(ledger.created_ms, config)},
        )
    return MatchResult(
        MatchKind.MISSING_AT_GATEWAY,
        key,
        None,
        ledger,
        _ledger_fields(ledger),
        {"gateway_record": None},
    )


def _gateway_fields(gateway: GatewayRecord) -> dict[str, EvidenceValue]:
    return {
        "reference": gateway.reference,
        "command_ref": gateway.command_ref,
        "amount_minor": gateway.amount_minor,
        "currency": gateway.currency,
        "status": gateway.status,
    }


def _ledger_fields(ledger: LedgerRecord) -> dict[str, EvidenceValue]:
    return {
        "resource_id": ledger.resource_id,
        "command_ref": ledger.command_ref,
        "gateway_reference": ledger.gateway_reference,
        "amount_minor": ledger.amount_minor,
        "currency": ledger.currency,
        "status": ledger.status,
    }


def _age(created_ms: int, config: MatchConfig) -> dict[str, EvidenceValue]:
    return {"age_ms": config.now_ms - created_ms, "grace_period_ms": config.grace_period_ms}


# ------------------------------------------------------------------------------------ summary


@dataclass(frozen=True, slots=True)
class ReconciliationSummary:
    """Counts in the shape of the reconciliation resource's `summary` (healable, not yet healed)."""

    gateway_records: int
    ledger_records: int
    matched: int
    healable: int
    breaks: Mapping[MatchKind, int] = field(hash=False)


def summarize(results: Iterable[MatchResult]) -> ReconciliationSummary:
    """Count a result stream without holding it."""
    gateway_records = ledger_records = matched = healable = 0
    breaks = dict.fromkeys(sorted(BREAK_KINDS), 0)
    for result in results:
        gateway_records += result.gateway is not None
        ledger_records += result.ledger is not None
        matched += result.kind is MatchKind.MATCHED
        healable += result.healable
        if result.is_break:
            breaks[result.kind] += 1
    return ReconciliationSummary(gateway_records, ledger_records, matched, healable, breaks)
