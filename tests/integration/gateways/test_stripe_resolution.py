"""Resolving unknown outcomes through the Stripe adapter: restarts, expired keys, the backoff.

Real HTTP to a simulator process; the engine's clock is a ManualClock, so a day passes instantly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.gateways.stripe_harness import Harness, fault_rule, make_harness, shared_sim

__all__ = ["shared_sim"]

from billkeep.domain.clock import ManualClock
from billkeep.engine.operations.charges import LOOKUP_GRACE_MS
from billkeep.engine.steps import DAY_MS, HOUR_MS
from billkeep.gateways.simulator_process import SimulatorProcess, run_simulator_process
from billkeep.gateways.stripe import STRIPE_KEY_RETENTION_MS


@pytest.fixture
def own_sim(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """A simulator of the test's own, for tests that stop or crash it."""
    with run_simulator_process(
        tmp_path / "sim.db", seed=5, extra_args=["--async-settle-ms", "0"]
    ) as process:
        yield process


@pytest.fixture
def own_harness(
    own_sim: SimulatorProcess, sqlite_url: str, clock: ManualClock
) -> Iterator[Harness]:
    h = make_harness(own_sim, sqlite_url, clock)
    yield h
    h.billkeep.close()


@pytest.fixture
def harness(shared_sim: SimulatorProcess, sqlite_url: str, clock: ManualClock) -> Iterator[Harness]:
    shared_sim.clear_faults()
    h = make_harness(shared_sim, sqlite_url, clock)
    yield h
    shared_sim.clear_faults()
    h.billkeep.close()


@pytest.fixture
def any_db_harness(
    shared_sim: SimulatorProcess, db_url: str, clock: ManualClock
) -> Iterator[Harness]:
    """On SQLite and on PostgreSQL."""
    shared_sim.clear_faults()
    h = make_harness(shared_sim, db_url, clock)
    yield h
    shared_sim.clear_faults()
    h.billkeep.close()


def _intents_of(harness: Harness, command_id: str) -> int:
    """Every payment intent the gateway holds for a command, whatever its status."""
    return len(harness.gateway.find_payments(command_id))


def _transitions(harness: Harness, command_id: str) -> list[str]:
    command = harness.billkeep.queries.command(harness.tenant_id, command_id)
    return [str(item["detail"]) for item in command["history"]]


def test_restart_between_payment_and_resolution_still_one_payment(own_harness: Harness) -> None:
    harness = own_harness
    harness.sim.set_faults({"rules": [fault_rule("timeout_after_commit")]})
    first = harness.charge("pm_card_visa")
    assert first.status == 202 and first.body()["status"] == "pending"
    # The gateway crashes after committing the payment; it comes back (faults are in memory: gone).
    harness.sim.restart(hard=True)
    assert harness.sim.state()["payment_intents"]["succeeded_by_command"] == {first.command_id: 1}
    charge = harness.resolve(str(first.resource_id), first.command_id)
    assert charge["status"] == "succeeded"
    harness.assert_books(charge, first.command_id)
    assert [a.attempt_number for a in harness.attempts(charge["id"])] == [1]
    assert any("repeated with the same key" in d for d in _transitions(harness, first.command_id))


def test_gateway_down_then_back_up_pays_once(own_harness: Harness) -> None:
    harness = own_harness
    harness.sim.stop()  # connection refused: provably not executed, retried with the same key
    first = harness.charge("pm_card_visa")
    assert first.status == 503 and not first.final
    assert first.body()["code"] == "gateway_unavailable"
    harness.sim.start()
    charge = harness.resolve(str(first.resource_id), first.command_id)
    assert charge["status"] == "succeeded"
    harness.assert_books(charge, first.command_id)


def _expire_key(harness: Harness) -> None:
    """Move the engine past the gateway's key retention (minus the engine's margin)."""
    harness.clock.advance(STRIPE_KEY_RETENTION_MS)


def test_after_key_retention_a_lookup_finds_the_payment_and_nothing_is_paid_again(
    any_db_harness: Harness,
) -> None:
    harness = any_db_harness
    harness.sim.set_faults({"rules": [fault_rule("timeout_after_commit")]})
    first = harness.charge("pm_card_visa")
    assert first.status == 202
    harness.sim.clear_faults()
    _expire_key(harness)
    harness.worker.drain()
    charge = harness.charge_view(str(first.resource_id))
    assert charge["status"] == "succeeded"
    harness.assert_books(charge, first.command_id)
    assert [a.attempt_number for a in harness.attempts(charge["id"])] == [1]
    assert _intents_of(harness, first.command_id) == 1
    assert any("found by lookup" in d for d in _transitions(harness, first.command_id))


def test_after_key_retention_proven_absence_starts_attempt_two_which_pays_once(
    any_db_harness: Harness,
) -> None:
    harness = any_db_harness
    harness.sim.set_faults({"rules": [fault_rule("error_before_commit", status_code=500)]})
    first = harness.charge("pm_card_visa")
    assert first.status == 202  # a 500: may or may not have executed (here: it did not)
    assert _intents_of(harness, first.command_id) == 0
    _expire_key(harness)
    harness.worker.drain()
    charge = harness.charge_view(str(first.resource_id))
    assert charge["status"] == "succeeded"
    attempts = harness.attempts(charge["id"])
    assert [(a.attempt_number, a.resolution) for a in attempts] == [
        (1, "proven_absent"),
        (2, "succeeded"),
    ]
    assert attempts[0].gateway_idempotency_key != attempts[1].gateway_idempotency_key
    harness.assert_books(charge, first.command_id)
    assert _intents_of(harness, first.command_id) == 1


def test_no_lookup_while_the_last_call_is_recent_even_past_key_retention(
    own_harness: Harness,
) -> None:
    harness = own_harness
    # The gateway refuses connections for most of a day; the attempt's key is sent again and
    # again, never executed, the last time just inside its safe window. Moments later the key is
    # "old" by its attempt's creation but was last sent moments ago: a lookup now could miss a
    # payment in flight or not yet searchable, so the engine waits the grace before it looks, and
    # only with absence proven starts attempt 2 (a new key): one payment.
    harness.sim.stop()
    first = harness.charge("pm_card_visa")
    assert first.status == 503
    harness.clock.advance(STRIPE_KEY_RETENTION_MS - HOUR_MS - 1_000)  # still inside the window
    harness.worker.drain()  # sent again, refused again: the last send is now
    harness.sim.start()
    harness.clock.advance(120_000)  # past the window, two minutes after the last send
    harness.worker.drain()
    charge_id = str(first.resource_id)
    assert harness.charge_view(charge_id)["status"] == "pending"
    assert any("too recent" in d for d in _transitions(harness, first.command_id))
    assert _intents_of(harness, first.command_id) == 0
    harness.clock.advance(LOOKUP_GRACE_MS)
    charge = harness.resolve(charge_id, first.command_id)
    assert charge["status"] == "succeeded"
    assert [a.attempt_number for a in harness.attempts(charge_id)] == [1, 2]
    harness.assert_books(charge, first.command_id)
    assert _intents_of(harness, first.command_id) == 1


def test_unknown_outcomes_follow_the_backoff_schedule(harness: Harness) -> None:
    clock = harness.clock
    # Every create fails with a 500 for a while: each resolution is unknown again.
    harness.sim.set_faults({"rules": [fault_rule("error_before_commit", status_code=500, count=5)]})
    first = harness.charge("pm_card_visa")
    assert first.status == 202
    delays = []
    for _ in range(4):
        row = harness.command_row(first.command_id)
        delays.append(row.next_attempt_at_ms - clock.now_ms())
        clock.set(row.next_attempt_at_ms)
        harness.worker.drain()
    assert delays == [60_000, 300_000, HOUR_MS, DAY_MS]
    charge = harness.resolve(str(first.resource_id), first.command_id)
    assert charge["status"] == "succeeded"
    harness.assert_books(charge, first.command_id)


def test_async_payment_stays_pending_until_settled_then_a_lookup_settles_it(
    harness: Harness,
) -> None:
    first = harness.charge("pm_card_async")
    assert first.status == 202
    pending = first.body()
    assert pending["status"] == "pending" and pending["gateway_reference"].startswith("pi_")
    for _ in range(3):  # scheduled checks while the gateway still says `processing`
        row = harness.command_row(first.command_id)
        harness.clock.set(row.next_attempt_at_ms)
        harness.worker.drain()
        assert harness.charge_view(pending["id"])["status"] == "pending"
    assert [r.outcome.value for r in harness.gateway.find_payments(first.command_id)] == [
        "processing"
    ]
    harness.sim.settle(pending["gateway_reference"])
    charge = harness.resolve(pending["id"], first.command_id)
    assert charge["status"] == "succeeded"
    harness.assert_books(charge, first.command_id)
