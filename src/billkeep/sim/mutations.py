"""Mutation switches: remove one safeguard at runtime, to prove the simulation notices.

Each mutation monkeypatches engine code (or, for a constraint, the schema of the simulation's
own database) for the duration of one run and restores it afterwards; committed code paths are
never edited. `billkeep sim --mutate NAME` runs with one; docs/verification.md records which
seed or test catches each.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.commands import CommandState, check_transition
from billkeep.domain.errors import LeaseLost
from billkeep.engine import accounting, command_store
from billkeep.engine.ledger import PostedEntry
from billkeep.engine.operations import charges as charge_ops
from billkeep.engine.operations import refunds as refund_ops
from billkeep.engine.steps import StepContext
from billkeep.storage.database import Database
from billkeep.storage.tables.core import commands

__all__ = ["MUTATIONS", "Mutation", "apply_mutation", "describe", "register_mutation"]


@dataclass(frozen=True)
class Mutation:
    name: str
    safeguard: str
    apply: Callable[[ExitStack, Database], None]


def _patch(stack: ExitStack, owner: Any, attribute: str, replacement: Any) -> None:
    original = getattr(owner, attribute)
    setattr(owner, attribute, replacement)
    stack.callback(setattr, owner, attribute, original)


# --- fencing: transitions no longer check the caller's fencing token ---------------------------------
def _unfenced_transition(
    conn: Connection,
    *,
    tenant_id: str,
    command_id: str,
    fencing_token: int,
    from_state: CommandState,
    to_state: CommandState,
    recovery_point: str,
    actor: str,
    now_ms: int,
    detail: str | None = None,
    values: dict[str, Any] | None = None,
) -> None:
    check_transition(from_state, to_state)
    updated = conn.execute(
        commands.update()
        .where(
            commands.c.tenant_id == tenant_id,
            commands.c.id == command_id,
            commands.c.state == from_state.value,
        )
        .values(
            state=to_state.value,
            recovery_point=recovery_point,
            updated_at_ms=now_ms,
            **(values or {}),
        )
    ).rowcount
    if updated != 1:
        raise LeaseLost(f"command {command_id} is no longer {from_state}")
    command_store._append_history(
        conn, tenant_id, command_id, from_state, to_state, recovery_point, actor, detail, now_ms
    )


def _fencing(stack: ExitStack, _db: Database) -> None:
    _patch(stack, command_store, "transition", _unfenced_transition)


# --- refund_hold: refunds in flight no longer hold part of the charge --------------------------------
def _refund_hold(stack: ExitStack, _db: Database) -> None:
    _patch(stack, refund_ops, "_HOLDING_STATES", ("succeeded",))


# --- entry_key: the payment entry is keyed by the message (when we heard it), not the fact -----------
def _entry_key(stack: ExitStack, _db: Database) -> None:
    original = accounting.post_payment_succeeded

    def by_event(conn: Connection, tenant_id: str, reference: str, *args: Any) -> PostedEntry:
        now_ms = args[-1]
        return original(conn, tenant_id, f"{reference}:heard-at-{now_ms}", *args)

    _patch(stack, accounting, "post_payment_succeeded", by_event)


# --- idempotency_unique: the key table loses its primary key -----------------------------------------
def _idempotency_unique(stack: ExitStack, db: Database) -> None:
    with db.write() as conn:
        pk_name = sa.inspect(conn).get_pk_constraint("idempotency_keys")["name"]
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TABLE idempotency_keys_unkeyed AS SELECT * FROM idempotency_keys"
            )
            conn.exec_driver_sql("DROP TABLE idempotency_keys")
            conn.exec_driver_sql("ALTER TABLE idempotency_keys_unkeyed RENAME TO idempotency_keys")
        else:
            conn.exec_driver_sql(f'ALTER TABLE idempotency_keys DROP CONSTRAINT "{pk_name}"')

    def restore() -> None:  # SQLite: the run's file is thrown away; PostgreSQL: put it back
        if db.dialect == "postgresql":
            with db.write() as conn:
                conn.exec_driver_sql("DELETE FROM idempotency_keys")
                conn.exec_driver_sql(
                    f'ALTER TABLE idempotency_keys ADD CONSTRAINT "{pk_name}"'
                    " PRIMARY KEY (tenant_id, operation, idempotency_key)"
                )

    stack.callback(restore)


# --- attempt_key: the gateway idempotency key is fresh on every call, not derived ---------------------
def _attempt_key(stack: ExitStack, _db: Database) -> None:
    counter = itertools.count()

    def fresh(command_id: str, attempt_number: int) -> str:
        return f"billkeep-{command_id}-attempt-{attempt_number}-call-{next(counter)}"

    _patch(stack, charge_ops, "attempt_key", fresh)


# --- resolve_blind: an unknown outcome is taken as "no payment" without asking the gateway -----------
def _resolve_blind(stack: ExitStack, _db: Database) -> None:
    original = charge_ops.CreateCharge._resolve

    def blind(self: charge_ops.CreateCharge, ctx: StepContext) -> Any:
        if ctx.recovery_point != "outcome_unknown":
            return original(
                self, ctx
            )  # sending an attempt stays as it is; only resolution is blind

        def read(conn: Connection) -> Any:
            charge = charge_ops.load_charge(conn, ctx.tenant_id, ctx.resource_id or "")
            return charge.current_attempt

        number = ctx.services.db.run_read(read)
        return charge_ops._Resolution("no_payment", number, detail="mutated: not asked")

    _patch(stack, charge_ops.CreateCharge, "_resolve", blind)


MUTATIONS: dict[str, Mutation] = {
    m.name: m
    for m in (
        Mutation("fencing", "command_store.transition checks the fencing token", _fencing),
        Mutation("refund_hold", "refunds in flight hold part of the charge (I7)", _refund_hold),
        Mutation("entry_key", "payment entries are keyed by the business fact", _entry_key),
        Mutation(
            "idempotency_unique",
            "unique (tenant, operation, key) on idempotency_keys",
            _idempotency_unique,
        ),
        Mutation(
            "attempt_key", "gateway idempotency keys are derived from the attempt", _attempt_key
        ),
        Mutation(
            "resolve_blind", "unknown outcomes are resolved by asking the gateway", _resolve_blind
        ),
    )
}


def register_mutation(mutation: Mutation) -> None:
    """Extensions (billkeep.sim.extensions) add the safeguards of the parts they drive."""
    assert mutation.name not in MUTATIONS, f"mutation {mutation.name} registered twice"
    MUTATIONS[mutation.name] = mutation


@contextmanager
def apply_mutation(name: str | None, db: Database) -> Iterator[None]:
    if name is None:
        yield
        return
    if name not in MUTATIONS:
        raise ValueError(f"unknown mutation {name!r}; known: {', '.join(sorted(MUTATIONS))}")
    with ExitStack() as stack:
        MUTATIONS[name].apply(stack, db)
        yield


def describe() -> list[tuple[str, str]]:
    return [(m.name, m.safeguard) for m in MUTATIONS.values()]
