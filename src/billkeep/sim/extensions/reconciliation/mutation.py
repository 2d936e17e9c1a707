"""The reconciliation safeguard the simulation must notice when removed.

`run_restart`: a reconciliation run that is executed again (its command resumed after a crash
after the run, a failed gateway page, or a lost lease) starts its window over: the runner first
deletes the run's staged gateway records and its breaks (`runner._clear`). Without that, the
resumed run stages the same payments again and adds its breaks to the ones already written: the
run reports records twice and calls a payment staged twice a duplicate payment.
"""

from __future__ import annotations

from contextlib import ExitStack

from sqlalchemy.engine import Connection

from billkeep.reconciliation import runner
from billkeep.sim.mutations import Mutation, register_mutation
from billkeep.storage.database import Database

__all__ = ["RUN_RESTART"]

RUN_RESTART = "run_restart"


def _keep_previous_attempt(_conn: Connection, _tenant_id: str, _run_id: str) -> None:
    """Mutated `_clear`: what an earlier execution of the run staged and reported stays."""


def _run_restart(stack: ExitStack, _db: Database) -> None:
    original = runner._clear
    setattr(runner, "_clear", _keep_previous_attempt)  # noqa: B010  (mypy: other arg names)
    stack.callback(setattr, runner, "_clear", original)


register_mutation(
    Mutation(
        RUN_RESTART,
        "a resumed reconciliation run replaces what it staged and reported (runner._clear)",
        _run_restart,
    )
)
