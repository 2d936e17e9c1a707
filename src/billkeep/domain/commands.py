"""The command state machine.

A command is one intent (charge this customer once, refund that charge once). Its state only moves
forward along the edges below; every move is recorded in `command_transitions`.

    created ──► running ──► succeeded            (final)
                  │  ▲  └─► failed               (final: e.g. card declined)
                  │  │  └─► rejected             (final: a business rule refused it, 409/422)
                  ▼  │
          awaiting_outcome ──► succeeded / failed (final, once the gateway outcome is learned)

`running -> running` records a recovery point reached, or a lease taken over by another worker.
`awaiting_outcome` means an effect may have happened at a foreign system and the outcome is not
known: it is resolved by asking (same gateway idempotency key, then lookup), never by redoing it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATES", "CommandState", "IllegalTransition", "check_transition", "is_final"]


class CommandState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    AWAITING_OUTCOME = "awaiting_outcome"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


FINAL_STATES = frozenset({CommandState.SUCCEEDED, CommandState.FAILED, CommandState.REJECTED})

_ALLOWED: dict[CommandState, frozenset[CommandState]] = {
    CommandState.CREATED: frozenset({CommandState.RUNNING}),
    CommandState.RUNNING: frozenset(
        {
            CommandState.RUNNING,
            CommandState.AWAITING_OUTCOME,
            CommandState.SUCCEEDED,
            CommandState.FAILED,
            CommandState.REJECTED,
        }
    ),
    CommandState.AWAITING_OUTCOME: frozenset(
        {CommandState.RUNNING, CommandState.SUCCEEDED, CommandState.FAILED}
    ),
    CommandState.SUCCEEDED: frozenset(),
    CommandState.FAILED: frozenset(),
    CommandState.REJECTED: frozenset(),
}


class IllegalTransition(AssertionError):
    """A programming error: code tried to move a command against its state machine."""


def is_final(state: CommandState | str) -> bool:
    return CommandState(state) in FINAL_STATES


def check_transition(from_state: CommandState | str, to_state: CommandState | str) -> None:
    source, target = CommandState(from_state), CommandState(to_state)
    if target not in _ALLOWED[source]:
        raise IllegalTransition(f"command cannot move from {source} to {target}")
