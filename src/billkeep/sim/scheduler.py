"""A deterministic scheduler of logical actors (clients, workers) over real engine code.

Each actor runs real billkeep code in its own thread, but only one thread ever runs at a time:
the scheduler hands a baton to an actor and waits until the actor hands it back at a yield point
(a phase boundary of the executor, reached through the crash hook, or a gateway call on the
wire) or finishes. So an interleaving is a pure function of the seed, yet the engine runs
unmodified: no database transaction is open at any yield point, so parking an actor never holds
a lock another actor needs.

At a yield point the scheduler's policy may also crash the actor: `SimulatedCrash` (a
BaseException, so no `except Exception` in the engine swallows it) unwinds the actor's stack,
throwing away its in-memory state while the database keeps what was committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Actor", "ActorState", "Scheduler", "SimulatedCrash", "YieldDecision"]

HANDOFF_TIMEOUT_S = 120.0  # a handoff slower than this is a hang (a bug), not a slow step


class SimulatedCrash(BaseException):
    """The actor's process died here (kill -9): nothing after this point runs."""


class ActorState(StrEnum):
    NEW = "new"
    PARKED = "parked"
    RUNNING = "running"
    DONE = "done"
    CRASHED = "crashed"


class YieldDecision(StrEnum):
    CONTINUE = "continue"
    PARK = "park"
    CRASH = "crash"


@dataclass
class Actor:
    name: str
    body: Callable[[], Any]
    state: ActorState = ActorState.NEW
    point: str | None = None  # where it is parked
    result: Any = None
    error: BaseException | None = None
    resume: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        return self.state in (ActorState.DONE, ActorState.CRASHED)


YieldPolicy = Callable[[Actor, str], YieldDecision]


class Scheduler:
    """Runs actors one at a time; `policy` decides, at each yield point, what happens next."""

    def __init__(self, policy: YieldPolicy, trace: Callable[[str], None]) -> None:
        self.policy = policy
        self._trace = trace
        self._local = threading.local()
        self._handback = threading.Event()
        self.actors: list[Actor] = []

    # --- called from inside actor threads ------------------------------------------------------
    def current(self) -> Actor | None:
        actor: Actor | None = getattr(self._local, "actor", None)
        return actor

    def yield_point(self, name: str) -> None:
        """A phase boundary: continue, park (hand the baton back) or crash, as the policy says."""
        actor = self.current()
        if actor is None:  # the harness itself (setup, audits) never yields
            return
        decision = self.policy(actor, name)
        if decision is YieldDecision.CONTINUE:
            return
        if decision is YieldDecision.CRASH:
            self._trace(f"crash {actor.name} at {name}")
            raise SimulatedCrash(name)
        actor.point = name
        actor.state = ActorState.PARKED
        actor.resume.clear()
        self._handback.set()
        if not actor.resume.wait(HANDOFF_TIMEOUT_S):
            raise SimulatedCrash(f"never resumed at {name}")
        actor.state = ActorState.RUNNING

    # --- called from the scheduler (main) thread ----------------------------------------------
    def spawn(self, name: str, body: Callable[[], Any]) -> Actor:
        actor = Actor(name, body)
        self.actors.append(actor)
        return actor

    def runnable(self) -> list[Actor]:
        return [a for a in self.actors if not a.finished]

    def parked(self) -> list[Actor]:
        return [a for a in self.actors if a.state is ActorState.PARKED]

    def step(self, actor: Actor) -> None:
        """Run `actor` until its next park, crash or end."""
        assert not actor.finished, f"{actor.name} already finished"
        self._handback.clear()
        if actor.state is ActorState.NEW:
            actor.state = ActorState.RUNNING
            actor.thread = threading.Thread(
                target=self._run_actor, args=(actor,), name=actor.name, daemon=True
            )
            actor.thread.start()
        else:
            actor.point = None
            actor.resume.set()
        if not self._handback.wait(HANDOFF_TIMEOUT_S):
            raise RuntimeError(f"actor {actor.name} did not yield within {HANDOFF_TIMEOUT_S}s")
        if actor.finished and actor.thread is not None:
            actor.thread.join()
        self.actors = [a for a in self.actors if not a.finished or a is actor]

    def run_to_end(self, actor: Actor) -> None:
        while not actor.finished:
            self.step(actor)

    def _run_actor(self, actor: Actor) -> None:
        self._local.actor = actor
        try:
            actor.result = actor.body()
            actor.state = ActorState.DONE
        except SimulatedCrash as crash:
            actor.error = crash
            actor.state = ActorState.CRASHED
        except BaseException as exc:  # surfaced to the runner as a harness failure
            actor.error = exc
            actor.state = ActorState.DONE
        finally:
            self._handback.set()

    def forget_finished(self) -> None:
        self.actors = [a for a in self.actors if not a.finished]
