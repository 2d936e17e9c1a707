"""Stateful property test of the money ledger against a plain in-memory model, on both engines.

Hypothesis drives random sequences of ledger operations: balanced multi-currency entries, repeats
with the same key (same content: a no-op; other content: a conflict naming the field), unbalanced
entries, two-phase entries resolved at most once (post whole or partially, void, expire), and
reversing entries. After every step the database must agree with the model on every account's four
balance columns, on the trial balance, and on every entry's state, and every stored entry must
balance when read back.

Each machine run uses a fresh tenant in one database per test, so runs are independent without a
database per run; a decoy tenant with colliding entry keys proves tenant isolation on the way.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import Connection
from tests.support.databases import PostgresProvisioner

from billkeep.domain.errors import Conflict, LedgerEntryConflict, UnbalancedEntry
from billkeep.domain.ledger import AccountType, Direction, EntryState, PostingSpec
from billkeep.domain.money import allocate_largest_remainder
from billkeep.engine import ledger
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from billkeep.storage.tables.core import accounts, journal_entries

__all__: list[str] = []

# Bounded so each engine runs in roughly 20 s on a small machine (a PostgreSQL round trip costs
# more than a SQLite call, so it gets fewer runs).
SQLITE_EXAMPLES = 30
POSTGRES_EXAMPLES = 15
STEPS_PER_EXAMPLE = 30
START_MS = 1_700_000_000_000
MAX_AMOUNT_IN_TEST_MINOR = 10**12  # sums of a few stay far inside one posting's 10^15 limit
MAX_PENDING_TIMEOUT_MS = 10_000

ACCOUNT_TYPES: dict[str, AccountType] = {
    "cash": AccountType.ASSET,
    "receivable:cus_a": AccountType.ASSET,
    "receivable:cus_b": AccountType.ASSET,
    "revenue": AccountType.REVENUE,
    "fees": AccountType.EXPENSE,
    "payable": AccountType.LIABILITY,
}
CODES = sorted(ACCOUNT_TYPES)
CURRENCIES = ("eur", "jpy", "usd")
DESCRIPTIONS = ("sale", "payment", "refund", "fee")
RESOURCE_IDS = (None, "ch_1", "ch_2")

Balances = list[int]  # [debits_posted, credits_posted, debits_pending, credits_pending]
COLUMNS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


def _spec(code: str, direction: Direction, amount_minor: int, currency: str) -> PostingSpec:
    customer = code.split(":", 1)[1] if code.startswith("receivable:") else None
    return PostingSpec(code, ACCOUNT_TYPES[code], direction, amount_minor, currency, customer)


amounts = st.integers(min_value=1, max_value=MAX_AMOUNT_IN_TEST_MINOR)
codes = st.sampled_from(CODES)


@st.composite
def balanced_postings(draw: st.DrawFn) -> list[PostingSpec]:
    """One or two currencies, each with 1-3 debits and 1-3 credits of equal totals, shuffled."""
    currencies = draw(st.lists(st.sampled_from(CURRENCIES), min_size=1, max_size=2, unique=True))
    specs: list[PostingSpec] = []
    for currency in currencies:
        debits = draw(st.lists(amounts, min_size=1, max_size=3))
        weights = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
        credits = [p for p in allocate_largest_remainder(sum(debits), weights) if p > 0]
        specs += [_spec(draw(codes), Direction.DEBIT, a, currency) for a in debits]
        specs += [_spec(draw(codes), Direction.CREDIT, a, currency) for a in credits]
    return list(draw(st.permutations(specs)))


@dataclass
class ModelEntry:
    key: str
    entry_id: str
    description: str
    specs: tuple[PostingSpec, ...]
    pending: bool
    resource_id: str | None
    state: EntryState
    expires_at_ms: int | None = None
    posted_amount_minor: int | None = None  # a two-phase entry's finally posted amount
    reversals: dict[str, str] = field(default_factory=dict)  # reversal key -> reversal entry id

    def posted_amounts(self) -> list[tuple[PostingSpec, int]]:
        amount = self.posted_amount_minor
        return [(s, s.amount_minor if amount is None else amount) for s in self.specs]


def _flip(direction: Direction) -> Direction:
    return Direction.CREDIT if direction is Direction.DEBIT else Direction.DEBIT


class LedgerModel:
    """What the ledger must contain, computed without a database."""

    def __init__(self) -> None:
        self.entries: dict[str, ModelEntry] = {}
        self.balances: dict[tuple[str, str], Balances] = {}

    def add(self, entry: ModelEntry) -> None:
        self.entries[entry.key] = entry
        for spec in entry.specs:
            self.balances.setdefault((spec.account_code, spec.currency), [0, 0, 0, 0])
        self._apply(entry.specs, pending=entry.pending, sign=+1)

    def resolve(self, entry: ModelEntry, outcome: EntryState, amount_minor: int) -> None:
        assert entry.state is EntryState.PENDING
        self._apply(entry.specs, pending=True, sign=-1)
        entry.state = outcome
        if outcome is EntryState.POSTED:
            entry.posted_amount_minor = amount_minor
            self._apply([replace(s, amount_minor=amount_minor) for s in entry.specs], False, +1)

    def _apply(self, specs: Sequence[PostingSpec], pending: bool, sign: int) -> None:
        for spec in specs:
            column = (0 if spec.direction is Direction.DEBIT else 1) + (2 if pending else 0)
            self.balances[(spec.account_code, spec.currency)][column] += sign * spec.amount_minor

    def trial_balance(self) -> dict[str, tuple[int, int]]:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for entry in self.entries.values():
            if entry.state is not EntryState.POSTED:
                continue
            for spec, amount in entry.posted_amounts():
                totals[spec.currency][0 if spec.direction is Direction.DEBIT else 1] += amount
        return {c: (d, cr) for c, (d, cr) in totals.items()}

    def keys(self, *, state: EntryState | None = None, two_phase: bool | None = None) -> list[str]:
        return sorted(
            k
            for k, e in self.entries.items()
            if (state is None or e.state is state) and (two_phase is None or e.pending == two_phase)
        )


class LedgerMachine(RuleBasedStateMachine):
    """Set `db` on a subclass: one database shared by all runs, one tenant per run."""

    db: Database

    def __init__(self) -> None:
        super().__init__()
        self.tenant_id = f"ten_{uuid.uuid4().hex}"
        self.now_ms = START_MS
        self.model = LedgerModel()
        self.next_key = 0

    # --- helpers -----------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Connection]:
        self.now_ms += 1
        with self.db.write() as conn:
            yield conn

    def new_key(self) -> str:
        # Keys k1, k2, ... collide on purpose with the decoy tenant's keys (see _seed_decoy).
        self.next_key += 1
        return f"k{self.next_key}"

    def post(
        self,
        key: str,
        description: str,
        specs: Sequence[PostingSpec],
        *,
        pending: bool = False,
        resource_id: str | None = None,
        timeout_ms: int | None = None,
    ) -> ledger.PostedEntry:
        with self.write() as conn:
            return ledger.post_entry(
                conn,
                self.tenant_id,
                key,
                description,
                specs,
                self.now_ms,
                resource_id=resource_id,
                pending=pending,
                pending_timeout_ms=timeout_ms,
            )

    # --- rules: posting ------------------------------------------------------------------------
    @initialize(specs=balanced_postings())
    def first_entry(self, specs: list[PostingSpec]) -> None:
        self.post_balanced(specs, "sale", None)

    @rule(
        specs=balanced_postings(),
        description=st.sampled_from(DESCRIPTIONS),
        resource_id=st.sampled_from(RESOURCE_IDS),
    )
    def post_balanced(
        self, specs: list[PostingSpec], description: str, resource_id: str | None
    ) -> None:
        key = self.new_key()
        posted = self.post(key, description, specs, resource_id=resource_id)
        assert posted.created and posted.entry_key == key
        self.model.add(
            ModelEntry(
                key, posted.id, description, tuple(specs), False, resource_id, EntryState.POSTED
            )
        )

    @rule(
        debit=codes,
        credit=codes,
        amount_minor=amounts,
        currency=st.sampled_from(CURRENCIES),
        timeout_ms=st.none() | st.integers(1, MAX_PENDING_TIMEOUT_MS),
    )
    def post_pending(
        self, debit: str, credit: str, amount_minor: int, currency: str, timeout_ms: int | None
    ) -> None:
        key = self.new_key()
        specs = (
            _spec(debit, Direction.DEBIT, amount_minor, currency),
            _spec(credit, Direction.CREDIT, amount_minor, currency),
        )
        posted = self.post(key, "hold", specs, pending=True, timeout_ms=timeout_ms)
        assert posted.created
        expires = None if timeout_ms is None else self.now_ms + timeout_ms
        entry = ModelEntry(key, posted.id, "hold", specs, True, None, EntryState.PENDING, expires)
        self.model.add(entry)

    @precondition(lambda self: bool(self.model.entries))
    @rule(data=st.data())
    def repeat_same_content(self, data: st.DataObject) -> None:
        entry = self.model.entries[data.draw(st.sampled_from(self.model.keys()), label="key")]
        again = self.post(
            entry.key,
            entry.description,
            entry.specs,
            pending=entry.pending,
            resource_id=entry.resource_id,
        )
        assert (again.id, again.created) == (entry.entry_id, False)

    @precondition(lambda self: bool(self.model.entries))
    @rule(data=st.data())
    def repeat_other_content_conflicts(self, data: st.DataObject) -> None:
        entry = self.model.entries[data.draw(st.sampled_from(self.model.keys()), label="key")]
        kinds = ["description", "resource_id", "account", "amount", "direction"]
        if len(entry.specs) == 2:
            kinds.append("pending")
        if len({s.currency for s in entry.specs}) == 1:
            kinds.append("currency")
        if not entry.pending and any(s.amount_minor >= 2 for s in entry.specs):
            kinds.append("postings")
        kind = data.draw(st.sampled_from(kinds), label="changed")
        description, resource_id, pending = entry.description, entry.resource_id, entry.pending
        specs = list(entry.specs)
        expected = kind
        if kind == "description":
            description += " (changed)"
        elif kind == "resource_id":
            resource_id = "ch_other" if resource_id is None else None
        elif kind == "pending":
            pending = not pending
        elif kind == "direction":
            specs = [replace(s, direction=_flip(s.direction)) for s in specs]
            expected = "postings[0].direction"
        elif kind == "currency":
            other = data.draw(st.sampled_from([c for c in CURRENCIES if c != specs[0].currency]))
            specs = [replace(s, currency=other) for s in specs]
            expected = "postings[0].currency"
        elif kind == "account":
            index = data.draw(st.integers(0, len(specs) - 1), label="index")
            other = data.draw(st.sampled_from([c for c in CODES if c != specs[index].account_code]))
            specs[index] = _spec(other, specs[index].direction, specs[index].amount_minor,
                                 specs[index].currency)  # fmt: skip
            expected = f"postings[{index}].account"
        elif kind == "amount":
            # Grow one debit and one credit of the same currency alike: still balanced.
            currency = specs[0].currency
            same = [i for i, s in enumerate(specs) if s.currency == currency]
            debit = next(i for i in same if specs[i].direction is Direction.DEBIT)
            credit = next(i for i in same if specs[i].direction is Direction.CREDIT)
            for i in (debit, credit):
                specs[i] = replace(specs[i], amount_minor=specs[i].amount_minor + 1)
            expected = f"postings[{min(debit, credit)}].amount"
        else:  # "postings": split one posting in two, same totals
            index = next(i for i, s in enumerate(specs) if s.amount_minor >= 2)
            half = specs[index].amount_minor // 2
            specs[index] = replace(specs[index], amount_minor=specs[index].amount_minor - half)
            specs.insert(index + 1, replace(specs[index], amount_minor=half))
        with pytest.raises(LedgerEntryConflict) as raised:
            self.post(entry.key, description, specs, pending=pending, resource_id=resource_id)
        assert str(raised.value).endswith(f"a different {expected}"), (str(raised.value), kind)

    @rule(specs=balanced_postings(), data=st.data())
    def unbalanced_is_rejected(self, specs: list[PostingSpec], data: st.DataObject) -> None:
        if data.draw(st.booleans(), label="single posting"):
            specs = specs[:1]
        else:
            index = data.draw(st.integers(0, len(specs) - 1), label="index")
            delta = data.draw(st.integers(1, 1000), label="delta")
            specs[index] = replace(specs[index], amount_minor=specs[index].amount_minor + delta)
        key = self.new_key()
        with pytest.raises(UnbalancedEntry):
            self.post(key, "broken", specs)
        with self.db.read() as conn:
            stored = conn.execute(
                sa.select(sa.func.count()).where(
                    journal_entries.c.tenant_id == self.tenant_id,
                    journal_entries.c.entry_key == key,
                )
            ).scalar_one()
        assert stored == 0, "a rejected entry writes nothing"

    # --- rules: two-phase ----------------------------------------------------------------------
    @precondition(lambda self: bool(self.model.keys(state=EntryState.PENDING)))
    @rule(data=st.data(), outcome=st.sampled_from(["post", "post_partial", "void", "expire"]))
    def resolve_pending(self, data: st.DataObject, outcome: str) -> None:
        keys = self.model.keys(state=EntryState.PENDING)
        entry = self.model.entries[data.draw(st.sampled_from(keys), label="key")]
        full = entry.specs[0].amount_minor
        amount: int | None = None
        if outcome == "post_partial":
            amount = data.draw(st.integers(1, full), label="amount")
        state = {"void": EntryState.VOIDED, "expire": EntryState.EXPIRED}.get(
            outcome, EntryState.POSTED
        )
        with self.write() as conn:
            done = ledger.resolve_pending(
                conn, self.tenant_id, entry.key, state, self.now_ms, post_amount_minor=amount
            )
        assert done, "the first resolution of a pending entry resolves it"
        self.model.resolve(entry, state, full if amount is None else amount)

    @precondition(lambda self: bool(self.model.keys(state=EntryState.PENDING, two_phase=True)))
    @rule(data=st.data())
    def partial_post_out_of_range_is_refused(self, data: st.DataObject) -> None:
        keys = self.model.keys(state=EntryState.PENDING, two_phase=True)
        entry = self.model.entries[data.draw(st.sampled_from(keys), label="key")]
        bad = data.draw(st.sampled_from([0, -1, entry.specs[0].amount_minor + 1]), label="amount")
        with pytest.raises(Conflict), self.write() as conn:
            ledger.resolve_pending(
                conn, self.tenant_id, entry.key, EntryState.POSTED, self.now_ms,
                post_amount_minor=bad,
            )  # fmt: skip

    @precondition(
        lambda self: any(e.state is not EntryState.PENDING for e in self.model.entries.values())
    )
    @rule(data=st.data(), outcome=st.sampled_from(list(EntryState)[1:]))
    def second_resolution_changes_nothing(self, data: st.DataObject, outcome: EntryState) -> None:
        keys = [k for k, e in self.model.entries.items() if e.state is not EntryState.PENDING]
        entry = self.model.entries[data.draw(st.sampled_from(sorted(keys)), label="key")]
        with self.write() as conn:
            done = ledger.resolve_pending(conn, self.tenant_id, entry.key, outcome, self.now_ms)
        assert not done, "an entry is resolved at most once"

    @rule(elapsed_ms=st.integers(0, MAX_PENDING_TIMEOUT_MS))
    def clock_expires_pending(self, elapsed_ms: int) -> None:
        self.now_ms += elapsed_ms
        with self.write() as conn:
            expired = ledger.expire_pending_entries(conn, self.tenant_id, self.now_ms)
        due = [
            e
            for e in self.model.entries.values()
            if e.state is EntryState.PENDING
            and e.expires_at_ms is not None
            and e.expires_at_ms <= self.now_ms
        ]
        assert expired == len(due)
        for entry in due:
            self.model.resolve(entry, EntryState.EXPIRED, 0)

    # --- rules: reversals ----------------------------------------------------------------------
    def _unreversed_posted(self) -> list[str]:
        return [
            k
            for k in self.model.keys(state=EntryState.POSTED)
            if not self.model.entries[k].reversals
        ]

    @precondition(lambda self: bool(self._unreversed_posted()))
    @rule(data=st.data())
    def reverse_posted(self, data: st.DataObject) -> None:
        keys = self._unreversed_posted()
        entry = self.model.entries[data.draw(st.sampled_from(keys), label="key")]
        key = self.new_key()
        with self.write() as conn:
            reversal = ledger.reverse_entry(
                conn, self.tenant_id, entry.key, key, f"reverse {entry.key}", self.now_ms
            )
        assert reversal.created
        flipped = tuple(
            replace(s, direction=_flip(s.direction), amount_minor=amount)
            for s, amount in entry.posted_amounts()
        )
        entry.reversals[key] = reversal.id
        self.model.add(
            ModelEntry(
                key,
                reversal.id,
                f"reverse {entry.key}",
                flipped,
                False,
                entry.resource_id,
                EntryState.POSTED,
            )
        )
        with self.db.read() as conn:
            stored = conn.execute(
                sa.select(journal_entries.c.reverses).where(
                    journal_entries.c.tenant_id == self.tenant_id,
                    journal_entries.c.id == reversal.id,
                )
            ).scalar_one()
        assert stored == entry.entry_id

    @precondition(lambda self: any(e.reversals for e in self.model.entries.values()))
    @rule(data=st.data())
    def repeat_reversal_is_idempotent(self, data: st.DataObject) -> None:
        keys = sorted(k for k, e in self.model.entries.items() if e.reversals)
        entry = self.model.entries[data.draw(st.sampled_from(keys), label="key")]
        reversal_key = data.draw(st.sampled_from(sorted(entry.reversals)), label="reversal")
        with self.write() as conn:
            again = ledger.reverse_entry(
                conn, self.tenant_id, entry.key, reversal_key, f"reverse {entry.key}", self.now_ms
            )
        assert (again.id, again.created) == (entry.reversals[reversal_key], False)

    @precondition(lambda self: any(e.reversals for e in self.model.entries.values()))
    @rule(data=st.data())
    def second_reversal_under_another_key_is_refused(self, data: st.DataObject) -> None:
        keys = sorted(k for k, e in self.model.entries.items() if e.reversals)
        entry = self.model.entries[data.draw(st.sampled_from(keys), label="key")]
        with pytest.raises(Conflict), self.write() as conn:
            ledger.reverse_entry(
                conn, self.tenant_id, entry.key, self.new_key(), "again", self.now_ms
            )

    @precondition(
        lambda self: any(e.state is not EntryState.POSTED for e in self.model.entries.values())
    )
    @rule(data=st.data())
    def reversing_unposted_is_refused(self, data: st.DataObject) -> None:
        keys = sorted(k for k, e in self.model.entries.items() if e.state is not EntryState.POSTED)
        entry = self.model.entries[data.draw(st.sampled_from(keys), label="key")]
        with pytest.raises(Conflict), self.write() as conn:
            ledger.reverse_entry(conn, self.tenant_id, entry.key, "never", "x", self.now_ms)

    # --- invariants ----------------------------------------------------------------------------
    @invariant()
    def database_matches_model(self) -> None:
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(accounts.c.code, accounts.c.currency, *(accounts.c[c] for c in COLUMNS))
                .where(accounts.c.tenant_id == self.tenant_id)
            ).all()  # fmt: skip
            stored = {(str(r[0]), str(r[1])): [int(v) for v in r[2:]] for r in rows}
            assert stored == self.model.balances

            trial = ledger.trial_balance(conn, self.tenant_id)
            assert all(line.debits_minor == line.credits_minor for line in trial), trial
            as_dict = {line.currency: (line.debits_minor, line.credits_minor) for line in trial}
            assert as_dict == self.model.trial_balance()

            entries = conn.execute(
                sa.select(journal_entries.c.entry_key, journal_entries.c.id, journal_entries.c.state)
                .where(journal_entries.c.tenant_id == self.tenant_id)
            ).all()  # fmt: skip
            expected = {k: (e.entry_id, e.state.value) for k, e in self.model.entries.items()}
            assert {str(k): (str(i), str(s)) for k, i, s in entries} == expected
            for _key, entry_id, _state in entries:
                view = ledger.load_entry(conn, self.tenant_id, str(entry_id))  # checks balance
                assert view.id == entry_id


# --- running it on both engines ----------------------------------------------------------------

DECOY_TENANT = "ten_decoy"


def _seed_decoy(db: Database) -> list[ledger.TrialBalanceLine]:
    """Entries under keys k1..k3 in another tenant: the machine reuses those keys with other content
    (a tenant leak would surface as a conflict), and a pending one that must never expire here."""
    specs = [_spec("cash", Direction.DEBIT, 7, "usd"), _spec("revenue", Direction.CREDIT, 7, "usd")]
    with db.write() as conn:
        for key in ("k1", "k2"):
            ledger.post_entry(conn, DECOY_TENANT, key, "decoy", specs, START_MS)
        ledger.post_entry(conn, DECOY_TENANT, "k3", "decoy", specs, START_MS, pending=True,
                          pending_timeout_ms=1)  # fmt: skip
        return ledger.trial_balance(conn, DECOY_TENANT)


def _run_machine(db: Database, max_examples: int) -> None:
    before = _seed_decoy(db)
    machine = type("LedgerMachineOnDb", (LedgerMachine,), {"db": db})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=STEPS_PER_EXAMPLE,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    with db.read() as conn:
        assert ledger.trial_balance(conn, DECOY_TENANT) == before
        state = conn.execute(
            sa.select(journal_entries.c.state).where(
                journal_entries.c.tenant_id == DECOY_TENANT, journal_entries.c.entry_key == "k3"
            )
        ).scalar_one()
    assert state == EntryState.PENDING.value, "another tenant's expiry never touches this one"


def test_ledger_matches_model_on_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        upgrade_to_head(db)
        _run_machine(db, SQLITE_EXAMPLES)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_ledger_matches_model_on_postgresql(pg_provisioner: PostgresProvisioner) -> None:
    with pg_provisioner.database() as url:
        db = Database(url)
        try:
            _run_machine(db, POSTGRES_EXAMPLES)
        finally:
            db.dispose()
