"""The scheduler runs one actor at a time, parks and crashes them only at yield points."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from billkeep.sim.scheduler import Actor, ActorState, Scheduler, SimulatedCrash, YieldDecision


def _always(decision: YieldDecision) -> Callable[[Actor, str], YieldDecision]:
    return lambda _actor, _point: decision


def test_park_hands_control_back_and_resume_continues() -> None:
    log: list[str] = []
    sched = Scheduler(_always(YieldDecision.PARK), log.append)

    def body(name: str) -> str:
        log.append(f"{name}:a")
        sched.yield_point("p1")
        log.append(f"{name}:b")
        return name

    first = sched.spawn("one", lambda: body("one"))
    second = sched.spawn("two", lambda: body("two"))
    sched.step(first)
    assert first.state is ActorState.PARKED and first.point == "p1"
    sched.step(second)
    sched.step(first)
    sched.step(second)
    assert log == ["one:a", "two:a", "one:b", "two:b"]
    assert first.result == "one" and second.state is ActorState.DONE


def test_crash_unwinds_the_actor_without_running_the_rest() -> None:
    ran: list[str] = []
    sched = Scheduler(_always(YieldDecision.CRASH), ran.append)

    def body() -> None:
        try:
            sched.yield_point("boundary")
        except Exception:  # an engine's `except Exception` must not swallow a crash
            ran.append("swallowed")
        ran.append("after")

    actor = sched.spawn("victim", body)
    sched.step(actor)
    assert actor.state is ActorState.CRASHED
    assert isinstance(actor.error, SimulatedCrash)
    assert "after" not in ran and "swallowed" not in ran


def test_yield_points_outside_actors_are_ignored() -> None:
    sched = Scheduler(_always(YieldDecision.CRASH), lambda _line: None)
    sched.yield_point("main thread")  # the harness itself never crashes


def test_unexpected_errors_are_kept_for_the_runner() -> None:
    sched = Scheduler(_always(YieldDecision.CONTINUE), lambda _line: None)

    def body() -> None:
        raise ValueError("engine bug")

    actor: Actor = sched.spawn("buggy", body)
    sched.step(actor)
    assert actor.state is ActorState.DONE
    assert isinstance(actor.error, ValueError)
    with pytest.raises(AssertionError):
        sched.step(actor)
