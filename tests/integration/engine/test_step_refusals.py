"""A step that raises a refusal (a 4xx BillkeepError) instead of returning a Finish: the command
is already recorded, so the refusal must become its final answer (state rejected, stored, replayed
identically) rather than leaving it running under its lease for a worker to re-run forever."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.domain.clock import ManualClock
from billkeep.domain.errors import BillkeepError, Conflict, FieldError, NotFound, ValidationFailed
from billkeep.engine.service import Billkeep
from billkeep.engine.steps import Advance, LocalStep, Step, StepContext, Transition
from billkeep.engine.worker import RecoveryWorker
from billkeep.storage.tables.core import command_transitions, commands


class _RefusingOperation:
    """Advances once (so the refusal happens after a recorded step), then raises."""

    name = "test.refuse"

    def __init__(self, error: BillkeepError) -> None:
        self.error = error
        self.calls = 0

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return dict(request)

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        return None

    def steps(self) -> Mapping[str, Step]:
        return {"started": LocalStep(self._advance), "checked": LocalStep(self._refuse)}

    def _advance(self, ctx: StepContext, conn: Connection) -> Transition:
        return Advance("checked")

    def _refuse(self, ctx: StepContext, conn: Connection) -> Transition:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        NotFound("no such thing"),
        Conflict("it moved"),
        ValidationFailed([FieldError("amount", "too large for this plan")]),
    ],
    ids=["404", "409", "422"],
)
def test_a_refusal_raised_by_a_step_is_the_commands_final_answer(
    bk: Billkeep, tenant: str, clock: ManualClock, error: BillkeepError
) -> None:
    operation = _RefusingOperation(error)
    bk.register(operation)
    first = bk.execute(tenant, operation.name, {"x": 1}, idempotency_key="refused-1")
    assert (first.status, first.final) == (error.status, True)
    body = first.body()
    assert body["code"] == error.code and body["status"] == error.status

    again = bk.execute(tenant, operation.name, {"x": 1}, idempotency_key="refused-1")
    assert (again.status, again.body_text, again.replayed) == (error.status, first.body_text, True)

    with bk.db.read() as conn:
        state = conn.execute(
            sa.select(commands.c.state).where(commands.c.id == first.command_id)
        ).scalar_one()
        moves = (
            conn.execute(
                sa.select(command_transitions.c.to_state)
                .where(command_transitions.c.command_id == first.command_id)
                .order_by(command_transitions.c.seq)
            )
            .scalars()
            .all()
        )
    assert state == "rejected"
    assert moves[-1] == "rejected" and moves.count("rejected") == 1

    # Nothing is left for the worker: the step is never run again.
    clock.advance(24 * 3_600_000)
    RecoveryWorker(bk, actor="worker").run_once()
    assert operation.calls == 1
