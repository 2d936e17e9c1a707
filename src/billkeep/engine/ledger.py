"""The money ledger: double-entry journal entries on top of the storage schema.

Every function takes an open write transaction, so a ledger effect commits atomically with the
business change that caused it (a charge's outcome, an invoice). Entries are idempotent by
`entry_key`: the same key with the same content returns the existing entry; the same key with other
content raises LedgerEntryConflict naming the first differing field.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.errors import Conflict, LedgerEntryConflict, NotFound, UnbalancedEntry
from billkeep.domain.ids import new_id
from billkeep.domain.ledger import (
    MAX_ENTRY_KEY_LENGTH,
    AccountType,
    Direction,
    EntryState,
    PostingSpec,
    assert_balanced,
    content_hash,
    diff_postings,
)
from billkeep.storage.database import insert_ignoring_conflicts
from billkeep.storage.tables.core import accounts, journal_entries, postings

__all__ = [
    "EntryView",
    "PostedEntry",
    "TrialBalanceLine",
    "ensure_account",
    "expire_pending_entries",
    "load_entry",
    "post_entry",
    "resolve_pending",
    "reverse_entry",
    "trial_balance",
]

MAX_EXPIRE_BATCH = 500


@dataclass(frozen=True, slots=True)
class PostedEntry:
    id: str
    entry_key: str
    created: bool


@dataclass(frozen=True, slots=True)
class EntryView:
    id: str
    entry_key: str
    state: str
    description: str
    resource_id: str | None
    reverses: str | None
    created_at_ms: int
    postings: tuple[tuple[str, str, int, str], ...]  # (account_id, direction, amount, currency)


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    currency: str
    debits_minor: int
    credits_minor: int


def ensure_account(conn: Connection, tenant_id: str, spec: PostingSpec, now_ms: int) -> str:
    """The id of the account (code, currency), created on first use; safe under races."""
    key = (accounts.c.tenant_id == tenant_id) & (accounts.c.code == spec.account_code)
    where = key & (accounts.c.currency == spec.currency)
    found = conn.execute(sa.select(accounts.c.id).where(where)).scalar_one_or_none()
    if found is not None:
        return str(found)
    dialect = conn.dialect.name
    conn.execute(
        insert_ignoring_conflicts(dialect, accounts).values(
            tenant_id=tenant_id,
            id=new_id("acct", now_ms),
            code=spec.account_code,
            currency=spec.currency,
            account_type=spec.account_type.value,
            customer_id=spec.customer_id,
            debits_posted=0,
            credits_posted=0,
            debits_pending=0,
            credits_pending=0,
            created_at_ms=now_ms,
        )
    )
    return str(conn.execute(sa.select(accounts.c.id).where(where)).scalar_one())


def _account_ids(
    conn: Connection, tenant_id: str, specs: Sequence[PostingSpec], now_ms: int
) -> list[str]:
    """Each posting's account id, creating missing accounts: one SELECT when all exist."""
    codes = sorted({s.account_code for s in specs})
    currencies = sorted({s.currency for s in specs})
    rows = conn.execute(
        sa.select(accounts.c.code, accounts.c.currency, accounts.c.id).where(
            accounts.c.tenant_id == tenant_id,
            accounts.c.code.in_(codes),
            accounts.c.currency.in_(currencies),
        )
    ).all()
    found = {(str(code), str(currency)): str(id_) for code, currency, id_ in rows}
    for spec in specs:
        key = (spec.account_code, spec.currency)
        if key not in found:
            found[key] = ensure_account(conn, tenant_id, spec, now_ms)
    return [found[(s.account_code, s.currency)] for s in specs]


def _lock_accounts(conn: Connection, tenant_id: str, account_ids: Sequence[str]) -> None:
    if conn.dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already serialises every writer
    # Sorted order: two entries touching the same accounts can never deadlock on each other.
    ordered = sorted(set(account_ids))
    query = (
        sa.select(accounts.c.id)
        .where(accounts.c.tenant_id == tenant_id, accounts.c.id.in_(ordered))
        .order_by(accounts.c.id)
    )
    locked = conn.execute(query.with_for_update()).scalars().all()
    assert len(locked) == len(ordered), "every posted account exists"


def _apply_balances(
    conn: Connection,
    tenant_id: str,
    rows: Sequence[tuple[str, str, int]],
    column_kind: str,
    sign: int,
) -> None:
    """Add (or subtract, sign=-1) amounts to the posted or pending columns of accounts."""
    for account_id, direction, amount_minor in rows:
        column = f"{'debits' if direction == Direction.DEBIT.value else 'credits'}_{column_kind}"
        conn.execute(
            accounts.update()
            .where(accounts.c.tenant_id == tenant_id, accounts.c.id == account_id)
            .values({column: accounts.c[column] + sign * amount_minor})
        )


def _existing(
    conn: Connection, tenant_id: str, entry_key: str
) -> sa.Row[tuple[object, ...]] | None:
    return conn.execute(
        sa.select(journal_entries).where(
            journal_entries.c.tenant_id == tenant_id, journal_entries.c.entry_key == entry_key
        )
    ).first()


def _check_same(
    conn: Connection,
    tenant_id: str,
    row: sa.Row[tuple[object, ...]],
    description: str,
    specs: Sequence[PostingSpec],
    pending: bool,
    resource_id: str | None,
) -> None:
    if row.content_hash == content_hash(description, specs, pending, resource_id):
        return
    stored = conn.execute(
        sa.select(
            accounts.c.code, postings.c.direction, postings.c.amount_minor, postings.c.currency
        )
        .join(
            accounts,
            (accounts.c.tenant_id == postings.c.tenant_id)
            & (accounts.c.id == postings.c.account_id),
        )
        .where(postings.c.tenant_id == tenant_id, postings.c.entry_id == row.id)
        .order_by(postings.c.seq)
    ).all()
    field = diff_postings([(str(a), str(d), int(m), str(c)) for a, d, m, c in stored], specs)
    if field is None:
        field = "description" if row.description != description else "resource_id"
        if row.resource_id == resource_id and row.description == description:
            field = "pending"
    raise LedgerEntryConflict(f"entry_key {row.entry_key!r} exists with a different {field}")


def post_entry(
    conn: Connection,
    tenant_id: str,
    entry_key: str,
    description: str,
    specs: Sequence[PostingSpec],
    now_ms: int,
    *,
    resource_id: str | None = None,
    pending: bool = False,
    pending_timeout_ms: int | None = None,
    reverses: str | None = None,
) -> PostedEntry:
    """Write one balanced entry exactly once per (tenant, entry_key)."""
    assert 0 < len(entry_key) <= MAX_ENTRY_KEY_LENGTH, "entry_key length"
    assert_balanced(specs)
    if pending:
        assert len(specs) == 2, "two-phase entries are transfers: one debit, one credit"
    existing = _existing(conn, tenant_id, entry_key)
    if existing is not None:
        _check_same(conn, tenant_id, existing, description, specs, pending, resource_id)
        return PostedEntry(str(existing.id), entry_key, created=False)
    account_ids = _account_ids(conn, tenant_id, specs, now_ms)
    _lock_accounts(conn, tenant_id, account_ids)
    entry_id = new_id("je", now_ms)
    # ON CONFLICT DO NOTHING: a concurrent transaction may have committed the same key after the
    # read above (READ COMMITTED on PostgreSQL). The unique key decides; the loser returns the
    # winner's entry like any repeat instead of failing with a unique violation.
    inserted = conn.execute(
        insert_ignoring_conflicts(conn.dialect.name, journal_entries)
        .values(
            tenant_id=tenant_id,
            id=entry_id,
            entry_key=entry_key,
            state=(EntryState.PENDING if pending else EntryState.POSTED).value,
            description=description,
            resource_id=resource_id,
            reverses=reverses,
            content_hash=content_hash(description, specs, pending, resource_id),
            created_at_ms=now_ms,
            resolved_at_ms=None if pending else now_ms,
            pending_expires_at_ms=(now_ms + pending_timeout_ms)
            if pending and pending_timeout_ms
            else None,
        )
        .returning(journal_entries.c.id)
    ).first()
    if inserted is None:
        winner = _existing(conn, tenant_id, entry_key)
        if winner is None:  # the other unique key: this entry was reversed meanwhile
            assert reverses is not None, f"entry_key {entry_key!r} conflicted but is not visible"
            raise Conflict(f"entry {reverses} is already reversed")
        _check_same(conn, tenant_id, winner, description, specs, pending, resource_id)
        return PostedEntry(str(winner.id), entry_key, created=False)
    conn.execute(
        postings.insert(),
        [
            {
                "tenant_id": tenant_id,
                "entry_id": entry_id,
                "seq": seq,
                "account_id": account_id,
                "direction": spec.direction.value,
                "amount_minor": spec.amount_minor,
                "currency": spec.currency,
                "posted_amount_minor": None,
            }
            for seq, (spec, account_id) in enumerate(zip(specs, account_ids, strict=True))
        ],
    )
    balance_rows = [
        (aid, s.direction.value, s.amount_minor) for aid, s in zip(account_ids, specs, strict=True)
    ]
    _apply_balances(conn, tenant_id, balance_rows, "pending" if pending else "posted", +1)
    return PostedEntry(entry_id, entry_key, created=True)


def _posting_rows(conn: Connection, tenant_id: str, entry_id: str) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        sa.select(postings.c.account_id, postings.c.direction, postings.c.amount_minor)
        .where(postings.c.tenant_id == tenant_id, postings.c.entry_id == entry_id)
        .order_by(postings.c.seq)
    ).all()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def resolve_pending(
    conn: Connection,
    tenant_id: str,
    entry_key: str,
    outcome: EntryState,
    now_ms: int,
    *,
    post_amount_minor: int | None = None,
) -> bool:
    """Post (whole or partially), void or expire a pending entry. True if this call resolved it.

    Resolution happens at most once: the state moves from pending with a conditional UPDATE, so a
    second resolution (concurrent or repeated) changes nothing and returns False.
    """
    assert outcome in (EntryState.POSTED, EntryState.VOIDED, EntryState.EXPIRED)
    row = _existing(conn, tenant_id, entry_key)
    if row is None:
        raise NotFound(f"no journal entry with key {entry_key!r}")
    rows = _posting_rows(conn, tenant_id, str(row.id))
    full_amount = rows[0][2]
    amount = full_amount if post_amount_minor is None else post_amount_minor
    if outcome is EntryState.POSTED and not 0 < amount <= full_amount:
        raise Conflict(f"partial post amount must be in 1..{full_amount}")
    _lock_accounts(conn, tenant_id, [r[0] for r in rows])
    changed = conn.execute(
        journal_entries.update()
        .where(
            journal_entries.c.tenant_id == tenant_id,
            journal_entries.c.id == row.id,
            journal_entries.c.state == EntryState.PENDING.value,
        )
        .values(state=outcome.value, resolved_at_ms=now_ms)
    ).rowcount
    if changed == 0:
        return False
    _apply_balances(conn, tenant_id, rows, "pending", -1)
    if outcome is EntryState.POSTED:
        conn.execute(
            postings.update()
            .where(postings.c.tenant_id == tenant_id, postings.c.entry_id == row.id)
            .values(posted_amount_minor=amount)
        )
        _apply_balances(conn, tenant_id, [(a, d, amount) for a, d, _ in rows], "posted", +1)
    return True


def expire_pending_entries(conn: Connection, tenant_id: str, now_ms: int) -> int:
    keys = conn.execute(
        sa.select(journal_entries.c.entry_key)
        .where(
            journal_entries.c.tenant_id == tenant_id,
            journal_entries.c.state == EntryState.PENDING.value,
            journal_entries.c.pending_expires_at_ms <= now_ms,
        )
        .limit(MAX_EXPIRE_BATCH)
    ).scalars()
    return sum(
        resolve_pending(conn, tenant_id, str(k), EntryState.EXPIRED, now_ms) for k in list(keys)
    )


def reverse_entry(
    conn: Connection,
    tenant_id: str,
    entry_key: str,
    reversal_key: str,
    description: str,
    now_ms: int,
) -> PostedEntry:
    """A correcting entry with every posting of a posted entry swapped; idempotent by reversal_key.
    An entry is reversed once: another reversal key is refused (unique (tenant_id, reverses))."""
    row = _existing(conn, tenant_id, entry_key)
    if row is None:
        raise NotFound(f"no journal entry with key {entry_key!r}")
    if row.state != EntryState.POSTED.value:
        raise Conflict("only posted entries can be reversed")
    earlier = conn.execute(
        sa.select(journal_entries.c.entry_key).where(
            journal_entries.c.tenant_id == tenant_id, journal_entries.c.reverses == row.id
        )
    ).scalar_one_or_none()
    if earlier is not None and earlier != reversal_key:
        raise Conflict(f"entry {entry_key!r} is already reversed by {earlier!r}")
    stored = conn.execute(
        sa.select(
            accounts.c.code,
            accounts.c.account_type,
            accounts.c.customer_id,
            postings.c.direction,
            sa.func.coalesce(postings.c.posted_amount_minor, postings.c.amount_minor),
            postings.c.currency,
        )
        .join(
            accounts,
            (accounts.c.tenant_id == postings.c.tenant_id)
            & (accounts.c.id == postings.c.account_id),
        )
        .where(postings.c.tenant_id == tenant_id, postings.c.entry_id == row.id)
        .order_by(postings.c.seq)
    ).all()
    flipped = [
        PostingSpec(
            account_code=str(code),
            account_type=AccountType(str(account_type)),
            direction=Direction.CREDIT if direction == Direction.DEBIT.value else Direction.DEBIT,
            amount_minor=int(amount),
            currency=str(currency),
            customer_id=customer_id,
        )
        for code, account_type, customer_id, direction, amount, currency in stored
    ]
    return post_entry(
        conn,
        tenant_id,
        reversal_key,
        description,
        flipped,
        now_ms,
        resource_id=row.resource_id,
        reverses=str(row.id),
    )


def load_entry(conn: Connection, tenant_id: str, entry_id: str) -> EntryView:
    """Read an entry and check again, on read, that it balances."""
    row = conn.execute(
        sa.select(journal_entries).where(
            journal_entries.c.tenant_id == tenant_id, journal_entries.c.id == entry_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no journal entry {entry_id}")
    posting_rows = conn.execute(
        sa.select(
            postings.c.account_id,
            postings.c.direction,
            sa.func.coalesce(postings.c.posted_amount_minor, postings.c.amount_minor),
            postings.c.currency,
        )
        .where(postings.c.tenant_id == tenant_id, postings.c.entry_id == entry_id)
        .order_by(postings.c.seq)
    ).all()
    view = EntryView(
        id=str(row.id),
        entry_key=str(row.entry_key),
        state=str(row.state),
        description=str(row.description),
        resource_id=row.resource_id,
        reverses=row.reverses,
        created_at_ms=int(row.created_at_ms),
        postings=tuple((str(a), str(d), int(m), str(c)) for a, d, m, c in posting_rows),
    )
    _check_view_balanced(view)
    return view


def _check_view_balanced(view: EntryView) -> None:
    totals: dict[str, int] = defaultdict(int)
    for _account, direction, amount_minor, currency in view.postings:
        totals[currency] += amount_minor if direction == Direction.DEBIT.value else -amount_minor
    if len(view.postings) < 2 or any(totals.values()):
        raise UnbalancedEntry(f"stored entry {view.id} does not balance: {dict(totals)}")


def trial_balance(conn: Connection, tenant_id: str) -> list[TrialBalanceLine]:
    """Totals of posted postings per currency, computed from postings (not from account caches)."""
    amount = sa.func.coalesce(postings.c.posted_amount_minor, postings.c.amount_minor)
    debit = sa.case((postings.c.direction == Direction.DEBIT.value, amount), else_=0)
    credit = sa.case((postings.c.direction == Direction.CREDIT.value, amount), else_=0)
    rows = conn.execute(
        sa.select(postings.c.currency, sa.func.sum(debit), sa.func.sum(credit))
        .join(
            journal_entries,
            (journal_entries.c.tenant_id == postings.c.tenant_id)
            & (journal_entries.c.id == postings.c.entry_id),
        )
        .where(
            postings.c.tenant_id == tenant_id,
            journal_entries.c.state == EntryState.POSTED.value,
        )
        .group_by(postings.c.currency)
        .order_by(postings.c.currency)
    ).all()
    return [TrialBalanceLine(str(c), int(d or 0), int(cr or 0)) for c, d, cr in rows]
