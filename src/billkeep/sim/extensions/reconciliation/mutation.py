"""The reconciliation safeguard the simulation must notice when removed.

`run_restart`: a reconciliation run that is executed again (its command resumed after a crash
after the run, a failed gateway page, or a lost lease) starts its window over: the runner first
deletes the run's staged gateway records and its breaks (`runner._clear`). Without that, the
resumed run stages the same payments again and adds its breaks to the ones already written: the
run reports records twice and calls a payment staged twice a duplicate payment.

`fee_known`: the ledger side of the merge says which charges already have their gateway fee
posted (`records.ledger_records`, `fee_posted`). Without it every run proposes the fee again;
the fact-keyed entry stops a second posting, so the money stays right, but the heal then does
nothing and the break stays open: every later run reports a fee break billkeep caused.

`run_fence`: every write transaction of a run checks that its command's lease is still this
execution's (`command_store.check_fence`, called by `reconciliation.operation`). Without it, a run
that outlives its lease keeps writing beside the worker's execution that took the lease over:
the run reports records twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from sqlalchemy.engine import Connection

from billkeep.reconciliation import operation, runner
from billkeep.reconciliation.matching import LedgerRecord
from billkeep.sim.mutations import Mutation, register_mutation
from billkeep.storage.database import Database

__all__ = ["FEE_KNOWN", "RUN_RESTART"]

RUN_RESTART = "run_restart"
FEE_KNOWN = "fee_known"


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


def _fee_known(stack: ExitStack, _db: Database) -> None:
    original = getattr(runner, "ledger_records")  # noqa: B009  (imported there, not exported)

    def fees_forgotten(conn: Connection, *args: Any) -> Iterator[LedgerRecord]:
        for record in original(conn, *args):
            yield dataclasses.replace(record, fee_posted=False)

    setattr(runner, "ledger_records", fees_forgotten)  # noqa: B010
    stack.callback(setattr, runner, "ledger_records", original)


register_mutation(
    Mutation(
        FEE_KNOWN,
        "the merge knows which charges already have their gateway fee posted (fee_posted)",
        _fee_known,
    )
)


def _unfenced(_conn: Connection, _tenant_id: str, _command_id: str, _fencing_token: int) -> None:
    """Mutated `check_fence`: an execution whose lease was taken over may still write."""


def _run_fence(stack: ExitStack, _db: Database) -> None:
    original = getattr(operation, "check_fence")  # noqa: B009  (imported there, not exported)
    setattr(operation, "check_fence", _unfenced)  # noqa: B010  (mypy: other arg names)
    stack.callback(setattr, operation, "check_fence", original)


register_mutation(
    Mutation(
        "run_fence",
        "a reconciliation run writes only while its command's lease is its own (check_fence)",
        _run_fence,
    )
)
