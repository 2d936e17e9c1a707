"""Two transactions post the same entry_key at the same instant on PostgreSQL (READ COMMITTED):
both see no entry, the first commits, the second's insert meets the unique key. The second must
return the first one's entry (created=False), not fail with a unique violation, and the books
must hold the entry once."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from billkeep.domain.errors import LedgerEntryConflict
from billkeep.domain.ledger import AccountType, Direction, PostingSpec
from billkeep.engine import ledger
from billkeep.storage.database import Database
from billkeep.storage.tables.core import journal_entries, postings

pytestmark = pytest.mark.postgres

LOSER_BLOCKED_S = 0.5  # long enough for the second transaction to reach the account lock


def _specs(amount_minor: int) -> list[PostingSpec]:
    return [
        PostingSpec("cash", AccountType.ASSET, Direction.DEBIT, amount_minor, "usd"),
        PostingSpec("revenue", AccountType.REVENUE, Direction.CREDIT, amount_minor, "usd"),
    ]


def _race(db: Database, tenant_id: str, loser_amount_minor: int) -> object:
    """The first transaction posts and holds its commit until the second one is past its read."""
    winner_posted = threading.Event()
    outcome: dict[str, object] = {}

    def winner() -> None:
        with db.write() as conn:
            outcome["winner"] = ledger.post_entry(
                conn, tenant_id, "payment:pi_1:succeeded", "payment", _specs(500), 1_000
            )
            winner_posted.set()
            time.sleep(LOSER_BLOCKED_S)  # the loser reads "no entry" and waits on the lock

    def loser() -> None:
        winner_posted.wait(10)
        try:
            with db.write() as conn:
                outcome["loser"] = ledger.post_entry(
                    conn,
                    tenant_id,
                    "payment:pi_1:succeeded",
                    "payment",
                    _specs(loser_amount_minor),
                    1_001,
                )
        except Exception as exc:  # reported to the test thread
            outcome["loser"] = exc

    threads = [threading.Thread(target=winner), threading.Thread(target=loser)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcome


def _entries_and_postings(db: Database, tenant_id: str) -> tuple[int, int]:
    with db.read() as conn:
        entries = conn.execute(
            sa.select(sa.func.count()).where(journal_entries.c.tenant_id == tenant_id)
        ).scalar_one()
        lines = conn.execute(
            sa.select(sa.func.count()).where(postings.c.tenant_id == tenant_id)
        ).scalar_one()
    return int(entries), int(lines)


def test_the_same_fact_posted_concurrently_is_posted_once(pg_url: str) -> None:
    db = Database(pg_url)
    tenant_id = f"ten_{uuid.uuid4().hex}"
    try:
        outcome = _race(db, tenant_id, 500)
        assert isinstance(outcome, dict)
        winner, loser = outcome["winner"], outcome["loser"]
        assert isinstance(winner, ledger.PostedEntry) and winner.created
        assert isinstance(loser, ledger.PostedEntry), loser
        assert not loser.created
        assert loser.id == winner.id
        assert _entries_and_postings(db, tenant_id) == (1, 2)
    finally:
        db.dispose()


def test_a_concurrent_different_content_under_the_same_key_is_refused(pg_url: str) -> None:
    db = Database(pg_url)
    tenant_id = f"ten_{uuid.uuid4().hex}"
    try:
        outcome = _race(db, tenant_id, 700)
        assert isinstance(outcome, dict)
        assert isinstance(outcome["loser"], LedgerEntryConflict), outcome["loser"]
        assert _entries_and_postings(db, tenant_id) == (1, 2)
    finally:
        db.dispose()
