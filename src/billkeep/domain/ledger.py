"""Double-entry rules, independent of storage.

An entry is at least two postings; per currency, debits equal credits. Entries are immutable: a
correction is a reversing entry. Two-phase entries (TigerBeetle's pending transfers) hold amounts in
the pending columns until posted (whole or partially), voided or expired, each at most once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from billkeep.domain.errors import FieldError, UnbalancedEntry, ValidationFailed
from billkeep.domain.fingerprint import fingerprint
from billkeep.domain.money import MAX_AMOUNT_MINOR, currency_exponent

__all__ = [
    "MAX_POSTINGS_PER_ENTRY",
    "AccountType",
    "Direction",
    "EntryState",
    "PostingSpec",
    "assert_balanced",
    "content_hash",
    "diff_postings",
]

MAX_POSTINGS_PER_ENTRY = 64
MAX_ENTRY_KEY_LENGTH = 255


class AccountType(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    REVENUE = "revenue"
    EXPENSE = "expense"


class Direction(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class EntryState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class PostingSpec:
    """One side of an entry, naming its account by code (created on first use)."""

    account_code: str
    account_type: AccountType
    direction: Direction
    amount_minor: int
    currency: str
    customer_id: str | None = None


def assert_balanced(postings: Sequence[PostingSpec]) -> None:
    """Raise unless the postings form a valid, balanced entry."""
    if len(postings) < 2:
        raise UnbalancedEntry("an entry needs at least two postings")
    if len(postings) > MAX_POSTINGS_PER_ENTRY:
        raise ValidationFailed.single("postings", f"at most {MAX_POSTINGS_PER_ENTRY} postings")
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for index, posting in enumerate(postings):
        if isinstance(posting.amount_minor, bool) or not isinstance(posting.amount_minor, int):
            raise ValidationFailed([FieldError(f"postings[{index}].amount", "must be an int")])
        if not 0 < posting.amount_minor <= MAX_AMOUNT_MINOR:
            raise ValidationFailed([FieldError(f"postings[{index}].amount", "out of range")])
        currency_exponent(posting.currency)
        side = 0 if posting.direction is Direction.DEBIT else 1
        totals[posting.currency][side] += posting.amount_minor
    unbalanced = {c: t for c, t in totals.items() if t[0] != t[1]}
    if unbalanced:
        detail = ", ".join(f"{c}: debits {d} != credits {cr}" for c, (d, cr) in unbalanced.items())
        raise UnbalancedEntry(f"entry does not balance per currency ({detail})")


def content_hash(
    description: str, postings: Sequence[PostingSpec], pending: bool, resource_id: str | None
) -> str:
    return fingerprint(
        {
            "description": description,
            "pending": pending,
            "resource_id": resource_id,
            "postings": [
                [p.account_code, p.direction.value, p.amount_minor, p.currency] for p in postings
            ],
        }
    )


def diff_postings(
    stored: Iterable[tuple[str, str, int, str]], requested: Sequence[PostingSpec]
) -> str | None:
    """Name the first field that differs between a stored and a requested entry, or None."""
    stored_list = list(stored)
    if len(stored_list) != len(requested):
        return "postings"
    for index, (old, new) in enumerate(zip(stored_list, requested, strict=True)):
        code, direction, amount_minor, currency = old
        if code != new.account_code:
            return f"postings[{index}].account"
        if direction != new.direction.value:
            return f"postings[{index}].direction"
        if amount_minor != new.amount_minor:
            return f"postings[{index}].amount"
        if currency != new.currency:
            return f"postings[{index}].currency"
    return None
