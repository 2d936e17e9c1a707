"""Rows of the command ledger: insert, find, claim (lease + fencing), transition, release.

Every state change goes through `transition()`, which checks the state machine, the caller's
fencing token, and appends to `command_transitions` in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.commands import CommandState, check_transition, is_final
from billkeep.domain.errors import LeaseLost
from billkeep.domain.ids import new_id
from billkeep.storage.tables.core import command_transitions, commands, idempotency_keys

__all__ = [
    "START_POINT",
    "ClaimedCommand",
    "CommandRow",
    "check_fence",
    "claim",
    "claim_recoverable_pg",
    "find_by_business_key",
    "find_by_idempotency_key",
    "insert_command",
    "load_command",
    "lock_command",
    "peek_by_business_key",
    "peek_by_idempotency_key",
    "set_key_expiry",
    "set_key_expiry_of_command",
    "transition",
]

START_POINT = "started"
MAX_DETAIL_LENGTH = 2000


@dataclass(frozen=True)
class CommandRow:
    tenant_id: str
    id: str
    operation: str
    idempotency_key: str | None
    business_key: str | None
    fingerprint: str
    request: dict[str, Any]
    state: CommandState
    recovery_point: str
    attempts: int
    lease_owner: str | None
    lease_expires_at_ms: int | None
    fencing_token: int
    response_status: int | None
    response_body: str | None
    resource_id: str | None
    next_attempt_at_ms: int | None
    key_expires_at_ms: int | None
    created_at_ms: int
    completed_at_ms: int | None

    @property
    def is_final(self) -> bool:
        return is_final(self.state)

    def lease_live(self, now_ms: int) -> bool:
        return self.lease_owner is not None and (self.lease_expires_at_ms or 0) > now_ms

    @classmethod
    def from_row(cls, row: Any) -> CommandRow:
        return cls(
            tenant_id=row.tenant_id,
            id=row.id,
            operation=row.operation,
            idempotency_key=row.idempotency_key,
            business_key=row.business_key,
            fingerprint=row.fingerprint,
            request=json.loads(row.request),
            state=CommandState(row.state),
            recovery_point=row.recovery_point,
            attempts=row.attempts,
            lease_owner=row.lease_owner,
            lease_expires_at_ms=row.lease_expires_at_ms,
            fencing_token=row.fencing_token,
            response_status=row.response_status,
            response_body=row.response_body,
            resource_id=row.resource_id,
            next_attempt_at_ms=row.next_attempt_at_ms,
            key_expires_at_ms=row.key_expires_at_ms,
            created_at_ms=row.created_at_ms,
            completed_at_ms=row.completed_at_ms,
        )


def _select(tenant_id: str, command_id: str) -> sa.Select[Any]:
    return sa.select(commands).where(commands.c.tenant_id == tenant_id, commands.c.id == command_id)


def load_command(conn: Connection, tenant_id: str, command_id: str) -> CommandRow | None:
    row = conn.execute(_select(tenant_id, command_id)).first()
    return None if row is None else CommandRow.from_row(row)


def lock_command(conn: Connection, tenant_id: str, command_id: str) -> CommandRow | None:
    """Load with a row lock on PostgreSQL (SQLite's BEGIN IMMEDIATE already serialises writers)."""
    query = _select(tenant_id, command_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else CommandRow.from_row(row)


def find_by_idempotency_key(
    conn: Connection, tenant_id: str, operation: str, key: str, now_ms: int
) -> CommandRow | None:
    """The command holding this key, or None; an expired key is freed on the way."""
    where = (
        (idempotency_keys.c.tenant_id == tenant_id)
        & (idempotency_keys.c.operation == operation)
        & (idempotency_keys.c.idempotency_key == key)
    )
    row = conn.execute(sa.select(idempotency_keys).where(where)).first()
    if row is None:
        return None
    if row.expires_at_ms is not None and row.expires_at_ms <= now_ms:
        conn.execute(idempotency_keys.delete().where(where))
        return None
    return lock_command(conn, tenant_id, row.command_id)


def find_by_business_key(conn: Connection, tenant_id: str, business_key: str) -> CommandRow | None:
    row = conn.execute(
        sa.select(commands.c.id).where(
            commands.c.tenant_id == tenant_id, commands.c.business_key == business_key
        )
    ).first()
    return None if row is None else lock_command(conn, tenant_id, row.id)


def peek_by_idempotency_key(
    conn: Connection, tenant_id: str, operation: str, key: str, now_ms: int
) -> CommandRow | None:
    """The command holding this unexpired key, read in one query without a lock.

    For the replay fast path only: a final command never changes again, so an unlocked read of it
    is as good as a locked one; anything else must be read again under the lock.
    """
    live = sa.or_(
        idempotency_keys.c.expires_at_ms.is_(None), idempotency_keys.c.expires_at_ms > now_ms
    )
    row = conn.execute(
        sa.select(commands)
        .join(
            idempotency_keys,
            (idempotency_keys.c.tenant_id == commands.c.tenant_id)
            & (idempotency_keys.c.command_id == commands.c.id),
        )
        .where(
            idempotency_keys.c.tenant_id == tenant_id,
            idempotency_keys.c.operation == operation,
            idempotency_keys.c.idempotency_key == key,
            live,
        )
    ).first()
    return None if row is None else CommandRow.from_row(row)


def peek_by_business_key(conn: Connection, tenant_id: str, business_key: str) -> CommandRow | None:
    """The command of this business key, without a lock (the replay fast path, as above)."""
    row = conn.execute(
        sa.select(commands).where(
            commands.c.tenant_id == tenant_id, commands.c.business_key == business_key
        )
    ).first()
    return None if row is None else CommandRow.from_row(row)


def insert_command(
    conn: Connection,
    *,
    tenant_id: str,
    operation: str,
    request_json: str,
    fingerprint: str,
    idempotency_key: str | None,
    business_key: str | None,
    actor: str,
    now_ms: int,
) -> str:
    """Record the intent. Unique constraints make a concurrent duplicate fail here, not later."""
    command_id = new_id("cmd", now_ms)
    conn.execute(
        commands.insert().values(
            tenant_id=tenant_id,
            id=command_id,
            operation=operation,
            idempotency_key=idempotency_key,
            business_key=business_key,
            fingerprint=fingerprint,
            request=request_json,
            state=CommandState.CREATED.value,
            recovery_point=START_POINT,
            attempts=0,
            lease_owner=None,
            lease_expires_at_ms=None,
            fencing_token=0,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
        )
    )
    if idempotency_key is not None:
        conn.execute(
            idempotency_keys.insert().values(
                tenant_id=tenant_id,
                operation=operation,
                idempotency_key=idempotency_key,
                command_id=command_id,
                created_at_ms=now_ms,
                expires_at_ms=None,
            )
        )
    _append_history(
        conn, tenant_id, command_id, None, CommandState.CREATED, START_POINT, actor, None, now_ms
    )
    return command_id


def _append_history(
    conn: Connection,
    tenant_id: str,
    command_id: str,
    from_state: CommandState | None,
    to_state: CommandState,
    recovery_point: str,
    actor: str,
    detail: str | None,
    now_ms: int,
) -> None:
    # The next seq computed inside the INSERT: one round trip instead of two. Appends to one
    # command never race: each follows the fenced UPDATE of its command row (or its INSERT).
    next_seq = (
        sa.select(sa.func.coalesce(sa.func.max(command_transitions.c.seq), 0) + 1)
        .where(
            command_transitions.c.tenant_id == tenant_id,
            command_transitions.c.command_id == command_id,
        )
        .scalar_subquery()
    )
    conn.execute(
        command_transitions.insert().values(
            tenant_id=tenant_id,
            command_id=command_id,
            seq=next_seq,
            from_state=None if from_state is None else from_state.value,
            to_state=to_state.value,
            recovery_point=recovery_point,
            actor=actor[:128],
            detail=None if detail is None else detail[:MAX_DETAIL_LENGTH],
            at_ms=now_ms,
        )
    )


@dataclass(frozen=True)
class ClaimedCommand:
    tenant_id: str
    id: str
    fencing_token: int


def claim_recoverable_pg(
    conn: Connection,
    claimable: sa.ColumnElement[bool],
    owner: str,
    now_ms: int,
    lease_ms: int,
    batch_size: int,
) -> list[ClaimedCommand]:
    """PostgreSQL: pick and lease a batch in ONE statement, `FOR UPDATE SKIP LOCKED` in a CTE, so
    concurrent workers on many machines each get different commands without waiting on each other.
    Every claim is still a recorded transition of the state machine."""
    picked = (
        sa.select(
            commands.c.tenant_id,
            commands.c.id,
            commands.c.state.label("old_state"),
            commands.c.lease_owner.label("old_owner"),
            commands.c.next_attempt_at_ms.label("due_ms"),
        )
        .where(claimable)
        # Ties broken by id: which commands a batch takes, and the order it runs them in, must
        # not depend on the table's physical order (the simulation replays a seed on PostgreSQL).
        .order_by(commands.c.next_attempt_at_ms, commands.c.tenant_id, commands.c.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    claimed = conn.execute(
        commands.update()
        .where(commands.c.tenant_id == picked.c.tenant_id, commands.c.id == picked.c.id)
        .values(
            state=CommandState.RUNNING.value,
            lease_owner=owner,
            lease_expires_at_ms=now_ms + lease_ms,
            fencing_token=commands.c.fencing_token + 1,
            attempts=commands.c.attempts + 1,
            updated_at_ms=now_ms,
        )
        .returning(
            commands.c.tenant_id,
            commands.c.id,
            commands.c.fencing_token,
            commands.c.recovery_point,
            picked.c.old_state,
            picked.c.old_owner,
            picked.c.due_ms,
        )
    ).all()
    # RETURNING comes in no particular order: run the batch in the order it was picked (NULLs
    # last, as ORDER BY sorts them).
    in_pick_order = sorted(
        claimed, key=lambda row: (row.due_ms is None, row.due_ms or 0, row[0], row[1])
    )
    result = []
    for tenant_id, command_id, token, point, old_state, old_owner, _due_ms in in_pick_order:
        source = CommandState(old_state)
        check_transition(source, CommandState.RUNNING)
        taken_over = source == CommandState.RUNNING and old_owner is not None
        detail = f"lease taken over from {old_owner}" if taken_over else "claimed"
        _append_history(
            conn, tenant_id, command_id, source, CommandState.RUNNING, point, owner, detail, now_ms
        )
        result.append(ClaimedCommand(tenant_id, command_id, int(token)))
    return result


def claim(conn: Connection, row: CommandRow, owner: str, now_ms: int, lease_ms: int) -> int:
    """Take the lease on a non-final command; returns the new fencing token.

    The caller has checked (under the row lock) that no live lease is held by someone else.
    """
    assert not row.is_final, "a final command is replayed, never claimed"
    token = row.fencing_token + 1
    taken_over = row.state == CommandState.RUNNING and row.lease_owner is not None
    detail = f"lease taken over from {row.lease_owner}" if taken_over else "claimed"
    updated = conn.execute(
        commands.update()
        .where(
            commands.c.tenant_id == row.tenant_id,
            commands.c.id == row.id,
            commands.c.fencing_token == row.fencing_token,
        )
        .values(
            state=CommandState.RUNNING.value,
            lease_owner=owner,
            lease_expires_at_ms=now_ms + lease_ms,
            fencing_token=token,
            attempts=row.attempts + 1,
            updated_at_ms=now_ms,
        )
    ).rowcount
    if updated != 1:
        raise LeaseLost(f"command {row.id} was claimed concurrently")
    check_transition(row.state, CommandState.RUNNING)
    _append_history(
        conn,
        row.tenant_id,
        row.id,
        row.state,
        CommandState.RUNNING,
        row.recovery_point,
        owner,
        detail,
        now_ms,
    )
    return token


def check_fence(conn: Connection, tenant_id: str, command_id: str, fencing_token: int) -> None:
    """Raise LeaseLost unless `fencing_token` is still the command's current one. For work a step
    does in transactions of its own (a long foreign step): each write transaction calls it first.
    The row lock orders the write before any takeover (which updates the row), so the writes of
    an execution whose lease was taken over are refused, never interleaved with the new one's."""
    current = conn.execute(
        sa.select(commands.c.fencing_token)
        .where(commands.c.tenant_id == tenant_id, commands.c.id == command_id)
        .with_for_update()
    ).scalar_one_or_none()
    if current != fencing_token:
        raise LeaseLost(f"command {command_id}: fencing token {fencing_token} is no longer current")


def transition(
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
    """Move a command along its state machine, fenced: a stale token raises LeaseLost."""
    check_transition(from_state, to_state)
    updated = conn.execute(
        commands.update()
        .where(
            commands.c.tenant_id == tenant_id,
            commands.c.id == command_id,
            commands.c.fencing_token == fencing_token,
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
        raise LeaseLost(f"command {command_id}: fencing token {fencing_token} is no longer current")
    _append_history(
        conn, tenant_id, command_id, from_state, to_state, recovery_point, actor, detail, now_ms
    )


def set_key_expiry(conn: Connection, row: CommandRow, expires_at_ms: int) -> None:
    if row.idempotency_key is None:
        return
    conn.execute(
        idempotency_keys.update()
        .where(
            idempotency_keys.c.tenant_id == row.tenant_id,
            idempotency_keys.c.operation == row.operation,
            idempotency_keys.c.idempotency_key == row.idempotency_key,
            idempotency_keys.c.command_id == row.id,
        )
        .values(expires_at_ms=expires_at_ms)
    )


def set_key_expiry_of_command(
    conn: Connection, tenant_id: str, operation: str, command_id: str, expires_at_ms: int
) -> None:
    """`set_key_expiry` without loading the command first: its key is read inside the UPDATE
    (a command with no idempotency key matches nothing)."""
    key = (
        sa.select(commands.c.idempotency_key)
        .where(commands.c.tenant_id == tenant_id, commands.c.id == command_id)
        .scalar_subquery()
    )
    conn.execute(
        idempotency_keys.update()
        .where(
            idempotency_keys.c.tenant_id == tenant_id,
            idempotency_keys.c.operation == operation,
            idempotency_keys.c.idempotency_key == key,
            idempotency_keys.c.command_id == command_id,
        )
        .values(expires_at_ms=expires_at_ms)
    )
