"""The exactly-once command executor.

`execute()` is the one entry point for every billing command:
1. validate the request (nothing is recorded if it is invalid) and fingerprint it;
2. in one transaction, find or record the command by its idempotency key or business key:
   another fingerprint -> IdempotencyKeyReused; final -> replay the stored response; leased by a
   live worker -> IdempotencyKeyInUse (or wait up to a bound); otherwise take the lease;
3. run its steps from the stored recovery point, each local phase one fenced transaction, each
   foreign call outside any transaction, until it finishes or suspends.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from billkeep.domain.commands import CommandState
from billkeep.domain.errors import (
    BillkeepError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    LeaseLost,
)
from billkeep.domain.fingerprint import canonical_json, fingerprint, validate_idempotency_key
from billkeep.engine import command_store as store
from billkeep.engine.crashpoints import crashpoint
from billkeep.engine.problems import problem_from_error
from billkeep.engine.steps import (
    Advance,
    EngineServices,
    Finish,
    ForeignStep,
    LocalStep,
    Operation,
    StepContext,
    Suspend,
    Transition,
)

__all__ = ["CommandIncomplete", "CommandResult", "Executor", "default_actor"]

logger = logging.getLogger("billkeep.engine")

MAX_CLAIM_RACES = 5
MAX_STEPS_PER_RUN = 32  # a command with more phases than this is a bug (a loop between points)
_MAX_REFUSAL_DETAIL_CHARS = 2_000  # of a refusal's message kept in the command's history


def default_actor(role: str) -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


class CommandIncomplete(BillkeepError):
    """The command hit an unexpected error and is not final; a retry or the worker resumes it."""

    code = "command_incomplete"
    status = 500
    title = "Command did not complete; retry with the same key to resume it"

    def __init__(self, detail: str, command_id: str) -> None:
        super().__init__(detail)
        self.command_id = command_id


@dataclass(frozen=True)
class CommandResult:
    command_id: str
    status: int
    body_text: str
    replayed: bool
    final: bool
    state: CommandState
    resource_id: str | None
    key_expires_at_ms: int | None
    retry_after_ms: int | None = None

    def body(self) -> Any:
        return json.loads(self.body_text)


@dataclass(frozen=True)
class _Claimed:
    row: store.CommandRow
    token: int


@dataclass(frozen=True)
class _InUse:
    retry_after_ms: int


class Executor:
    def __init__(self, services: EngineServices, operations: Mapping[str, Operation]) -> None:
        self.services = services
        self.operations = dict(operations)

    # --- entry points --------------------------------------------------------------------------
    def execute(
        self,
        tenant_id: str,
        operation: str,
        request: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        business_key: str | None = None,
        wait_ms: int = 0,
        actor: str | None = None,
    ) -> CommandResult:
        op = self.operations[operation]
        assert (idempotency_key is None) != (business_key is None), "exactly one intent key"
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        canonical = op.validate(request)
        request_json = canonical_json(canonical)
        request_fingerprint = fingerprint(canonical)
        who = actor or default_actor("api")
        deadline_ms = self.services.clock.now_ms() + min(
            max(wait_ms, 0), self.services.config.max_wait_ms
        )
        replayed = self._replay_if_final(
            op, tenant_id, request_fingerprint, idempotency_key, business_key
        )
        if replayed is not None:
            return replayed
        while True:
            outcome = self._record_or_claim(
                op, tenant_id, request_json, request_fingerprint, idempotency_key, business_key, who
            )
            if isinstance(outcome, CommandResult):
                return outcome
            if isinstance(outcome, _Claimed):
                try:
                    return self._run(op, outcome.row, outcome.token, who)
                except LeaseLost as exc:
                    # Our lease expired mid-way and another worker took the command over: it is
                    # still running, under its new owner. Nothing of ours was committed after that.
                    raise IdempotencyKeyInUse(str(exc), retry_after_s=1) from exc
            remaining_ms = deadline_ms - self.services.clock.now_ms()
            if remaining_ms <= 0:
                raise IdempotencyKeyInUse(
                    "the first request with this key is still running",
                    retry_after_s=max(1, -(-outcome.retry_after_ms // 1000)),
                )
            time.sleep(min(self.services.config.wait_poll_ms, remaining_ms) / 1000)

    def resume(self, tenant_id: str, command_id: str, token: int, actor: str) -> CommandResult:
        """Continue a command the caller has just claimed (the recovery worker's path)."""
        row = self.services.db.run_read(lambda c: store.load_command(c, tenant_id, command_id))
        assert row is not None, "a claimed command exists"
        if row.fencing_token != token:
            raise LeaseLost(f"command {command_id} was claimed again")
        return self._run(self.operations[row.operation], row, token, actor)

    # --- recording and claiming ------------------------------------------------------------------
    def _replay_if_final(
        self,
        op: Operation,
        tenant_id: str,
        request_fingerprint: str,
        idempotency_key: str | None,
        business_key: str | None,
    ) -> CommandResult | None:
        """Replay a final command from one read-only query, or None to take the locked path.

        A final command is immutable (terminal state, stored response), so reading it without a
        lock returns what the locked path would; a read-only transaction also commits without
        writing (no row lock, hence no WAL flush on PostgreSQL). Anything not final (absent,
        running, suspended, expired key) goes through `_record_or_claim` as before.
        """

        def work(conn: Connection) -> CommandResult | None:
            now_ms = self.services.clock.now_ms()
            if idempotency_key is not None:
                row = store.peek_by_idempotency_key(
                    conn, tenant_id, op.name, idempotency_key, now_ms
                )
            else:
                assert business_key is not None
                row = store.peek_by_business_key(conn, tenant_id, business_key)
            if row is None or not row.is_final:
                return None
            if row.fingerprint != request_fingerprint or row.operation != op.name:
                raise IdempotencyKeyReused(
                    f"key was first used with a different request (command {row.id})"
                )
            return _replay(row)

        return self.services.db.run_read(work)

    def _record_or_claim(
        self,
        op: Operation,
        tenant_id: str,
        request_json: str,
        request_fingerprint: str,
        idempotency_key: str | None,
        business_key: str | None,
        actor: str,
    ) -> CommandResult | _Claimed | _InUse:
        config = self.services.config

        def work(conn: Connection) -> CommandResult | _Claimed | _InUse:
            now_ms = self.services.clock.now_ms()
            if idempotency_key is not None:
                row = store.find_by_idempotency_key(
                    conn, tenant_id, op.name, idempotency_key, now_ms
                )
            else:
                assert business_key is not None
                row = store.find_by_business_key(conn, tenant_id, business_key)
            if row is None:
                op.precheck(conn, tenant_id, json.loads(request_json))
                command_id = store.insert_command(
                    conn,
                    tenant_id=tenant_id,
                    operation=op.name,
                    request_json=request_json,
                    fingerprint=request_fingerprint,
                    idempotency_key=idempotency_key,
                    business_key=business_key,
                    actor=actor,
                    now_ms=now_ms,
                )
                row = store.lock_command(conn, tenant_id, command_id)
                assert row is not None
            elif row.fingerprint != request_fingerprint or row.operation != op.name:
                raise IdempotencyKeyReused(
                    f"key was first used with a different request (command {row.id})"
                )
            if row.is_final:
                return _replay(row)
            if row.lease_live(now_ms):
                return _InUse(retry_after_ms=max(1, (row.lease_expires_at_ms or now_ms) - now_ms))
            token = store.claim(conn, row, actor, now_ms, config.lease_ms)
            return _Claimed(row, token)

        for _ in range(MAX_CLAIM_RACES):
            try:
                return self.services.db.run_write(work)
            except IntegrityError:
                # Another request recorded the same key between our read and our insert: the
                # unique constraint decided; read again and join the winner's command.
                continue
        raise IdempotencyKeyInUse("the key is contended; retry shortly", retry_after_s=1)

    # --- running steps -----------------------------------------------------------------------------
    def _run(self, op: Operation, row: store.CommandRow, token: int, actor: str) -> CommandResult:
        steps = op.steps()
        ctx = StepContext(
            services=self.services,
            tenant_id=row.tenant_id,
            command_id=row.id,
            operation=row.operation,
            request=row.request,
            fencing_token=token,
            actor=actor,
            recovery_point=row.recovery_point,
            state=CommandState.RUNNING,
            resource_id=row.resource_id,
            attempts=row.attempts + 1,
        )
        for _ in range(MAX_STEPS_PER_RUN):
            step = steps.get(ctx.recovery_point)
            assert step is not None, (
                f"{op.name} has no step for recovery point {ctx.recovery_point}"
            )
            point = ctx.recovery_point
            crashpoint(f"{op.name}:{point}:before")
            try:
                result = self._run_step(ctx, step)
            except LeaseLost:
                raise
            except BillkeepError as exc:
                if exc.status >= 500:
                    self._release_after_error(ctx, exc)
                    raise
                return self._reject_after_refusal(ctx, exc)
            except Exception as exc:
                self._release_after_error(ctx, exc)
                raise CommandIncomplete(f"{type(exc).__name__}: {exc}", ctx.command_id) from exc
            crashpoint(f"{op.name}:{point}:after_commit")
            if isinstance(result, CommandResult):
                return result
        raise AssertionError(f"{op.name} exceeded {MAX_STEPS_PER_RUN} steps")

    def _run_step(self, ctx: StepContext, step: LocalStep | ForeignStep) -> CommandResult | None:
        if isinstance(step, LocalStep):
            return self.services.db.run_write(
                lambda conn: self._commit(ctx, conn, step.run(ctx, conn))
            )
        answer = step.call(ctx)
        crashpoint(f"{ctx.operation}:{ctx.recovery_point}:after_call")
        return self.services.db.run_write(
            lambda conn: self._commit(ctx, conn, step.record(ctx, conn, answer))
        )

    def _commit(
        self, ctx: StepContext, conn: Connection, result: Transition
    ) -> CommandResult | None:
        """Apply a step's transition in the step's own transaction (fenced)."""
        now_ms = ctx.now_ms()
        resource_id = result.resource_id or ctx.resource_id
        common: dict[str, Any] = {"resource_id": resource_id}
        if isinstance(result, Advance):
            _move(
                conn,
                ctx,
                CommandState.RUNNING,
                result.point,
                now_ms,
                result.detail,
                common,
            )
            ctx.recovery_point, ctx.resource_id = result.point, resource_id
            return None
        body_text = canonical_json(dict(result.body))
        if isinstance(result, Finish):
            return self._finish(ctx, conn, result, body_text, resource_id, now_ms)
        return self._suspend(ctx, conn, result, body_text, resource_id, now_ms)

    def _finish(
        self,
        ctx: StepContext,
        conn: Connection,
        result: Finish,
        body_text: str,
        resource_id: str | None,
        now_ms: int,
    ) -> CommandResult:
        expires_at_ms = now_ms + self.services.config.idempotency_ttl_ms
        _move(
            conn,
            ctx,
            result.state,
            "finished",
            now_ms,
            result.detail,
            {
                "resource_id": resource_id,
                "response_status": result.status,
                "response_body": body_text,
                **_LEASE_RELEASED,
                "next_attempt_at_ms": None,
                "completed_at_ms": now_ms,
                "key_expires_at_ms": expires_at_ms,
            },
        )
        store.set_key_expiry_of_command(
            conn, ctx.tenant_id, ctx.operation, ctx.command_id, expires_at_ms
        )
        return CommandResult(
            ctx.command_id,
            result.status,
            body_text,
            replayed=False,
            final=True,
            state=result.state,
            resource_id=resource_id,
            key_expires_at_ms=expires_at_ms,
        )

    def _suspend(
        self,
        ctx: StepContext,
        conn: Connection,
        result: Suspend,
        body_text: str,
        resource_id: str | None,
        now_ms: int,
    ) -> CommandResult:
        assert result.state in (CommandState.RUNNING, CommandState.AWAITING_OUTCOME)
        _move(
            conn,
            ctx,
            result.state,
            result.point,
            now_ms,
            result.detail,
            {
                "resource_id": resource_id,
                "response_status": result.status,
                "response_body": body_text,
                **_LEASE_RELEASED,
                "next_attempt_at_ms": now_ms + result.retry_after_ms,
            },
        )
        return CommandResult(
            ctx.command_id,
            result.status,
            body_text,
            replayed=False,
            final=False,
            state=result.state,
            resource_id=resource_id,
            key_expires_at_ms=None,
            retry_after_ms=result.retry_after_ms,
        )

    def _reject_after_refusal(self, ctx: StepContext, exc: BillkeepError) -> CommandResult:
        """A step raised a refusal (4xx) instead of returning a Finish: the command is recorded,
        so the refusal is its final answer all the same. Stored, it is what every retry replays,
        and no worker re-runs a step that would refuse again forever (I2, I5)."""
        assert exc.status < 500, "only refusals are final; errors leave the command to resume"
        refusal = Finish(
            CommandState.REJECTED,
            exc.status,
            problem_from_error(exc),
            detail=f"{exc.code}: {exc.detail}"[:_MAX_REFUSAL_DETAIL_CHARS],
        )
        result = self.services.db.run_write(lambda conn: self._commit(ctx, conn, refusal))
        assert isinstance(result, CommandResult) and result.final, "a Finish ends the command"
        return result

    def _release_after_error(self, ctx: StepContext, exc: BaseException) -> None:
        """Leave the command non-final and unleased, so a retry or the worker resumes it."""
        logger.warning("command %s failed at %s: %r", ctx.command_id, ctx.recovery_point, exc)
        retry_ms = self.services.config.error_retry_ms

        def work(conn: Connection) -> None:
            now_ms = ctx.now_ms()
            _move(
                conn,
                ctx,
                CommandState.RUNNING,
                ctx.recovery_point,
                now_ms,
                f"error: {type(exc).__name__}: {exc}",
                {
                    **_LEASE_RELEASED,
                    "next_attempt_at_ms": now_ms + retry_ms,
                    "last_error": repr(exc)[:2000],
                },
            )

        try:
            self.services.db.run_write(work)
        except Exception:  # the lease expires by itself; the worker will pick the command up
            logger.exception("could not release command %s after an error", ctx.command_id)


# A command that stops (finished, suspended, or released after an error) gives up its lease.
_LEASE_RELEASED: dict[str, Any] = {"lease_owner": None, "lease_expires_at_ms": None}


def _move(
    conn: Connection,
    ctx: StepContext,
    to_state: CommandState,
    recovery_point: str,
    now_ms: int,
    detail: str | None,
    values: dict[str, Any],
) -> None:
    """One fenced transition of the running command `ctx` describes."""
    store.transition(
        conn,
        tenant_id=ctx.tenant_id,
        command_id=ctx.command_id,
        fencing_token=ctx.fencing_token,
        from_state=ctx.state,
        to_state=to_state,
        recovery_point=recovery_point,
        actor=ctx.actor,
        now_ms=now_ms,
        detail=detail,
        values=values,
    )


def _replay(row: store.CommandRow) -> CommandResult:
    assert row.response_status is not None and row.response_body is not None, "final has a response"
    return CommandResult(
        row.id,
        row.response_status,
        row.response_body,
        replayed=True,
        final=True,
        state=row.state,
        resource_id=row.resource_id,
        key_expires_at_ms=row.key_expires_at_ms,
    )
