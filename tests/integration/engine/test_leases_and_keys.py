"""Fencing (a zombie worker cannot commit), waiting on an in-flight key, key retention and sweeping."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from billkeep.domain.clock import ManualClock
from billkeep.domain.errors import IdempotencyKeyInUse, LeaseLost
from billkeep.engine import command_store as store
from billkeep.engine.service import Billkeep
from billkeep.engine.worker import RecoveryWorker
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import PaymentRequest, PaymentResult

LEASE_MS = 5_000


class PausingGateway(FakeGateway):
    """Makes the payment, then blocks until released: a worker paused (GC, partition) mid-call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paused = threading.Event()
        self.release = threading.Event()
        self.pause_next = True

    def create_payment(self, request: PaymentRequest) -> PaymentResult:
        result = super().create_payment(request)
        if self.pause_next:
            self.pause_next = False
            self.paused.set()
            assert self.release.wait(30)
        return result


def test_zombie_worker_cannot_commit_after_takeover(
    db_url: str, clock: ManualClock, make_billkeep: Any
) -> None:
    gateway = PausingGateway(clock=clock)
    bk: Billkeep = make_billkeep(db_url, gateway, lease_ms=LEASE_MS)
    tenant, _ = bk.tenants.create_tenant("fencing", clock.now_ms())
    customer = bk.create_customer(tenant, {"payment_method": "pm_card_visa"}, "c").body()["id"]
    request = {"customer_id": customer, "amount": 900, "currency": "usd"}
    zombie_outcome: list[object] = []

    def zombie() -> None:
        try:
            zombie_outcome.append(bk.create_charge(tenant, request, "zombie-key"))
        except IdempotencyKeyInUse as exc:
            zombie_outcome.append(exc)

    thread = threading.Thread(target=zombie)
    thread.start()
    assert gateway.paused.wait(30)  # the zombie made the payment and is stuck before recording it
    clock.advance(LEASE_MS + 1)  # its lease expires
    successor = RecoveryWorker(bk, actor="successor")
    successor.drain()  # takes over, asks the gateway again with the same key, records the outcome
    assert successor.stats.finished == 1
    gateway.release.set()
    thread.join(30)
    assert len(zombie_outcome) == 1 and isinstance(zombie_outcome[0], IdempotencyKeyInUse)
    assert list(gateway.succeeded_by_command().values()) == [1]
    assert bk.queries.trial_balance(tenant)["currencies"] == [
        {"currency": "usd", "debits": 1800, "credits": 1800}
    ]
    command = bk.queries.command(tenant, bk.queries.charges(tenant).data[0]["command_id"])
    actors = [h["actor"] for h in command["history"]]
    assert "successor" in actors and command["state"] == "succeeded"


def test_stale_fencing_token_is_refused_by_the_store(
    db_url: str, clock: ManualClock, make_billkeep: Any
) -> None:
    bk: Billkeep = make_billkeep(db_url, FakeGateway(clock=clock))

    def setup(conn: Any) -> tuple[store.CommandRow, int]:
        command_id = store.insert_command(
            conn,
            tenant_id="ten_x",
            operation="charge.create",
            request_json="{}",
            fingerprint="f",
            idempotency_key="k",
            business_key=None,
            actor="a",
            now_ms=clock.now_ms(),
        )
        row = store.lock_command(conn, "ten_x", command_id)
        assert row is not None
        return row, store.claim(conn, row, "first", clock.now_ms(), LEASE_MS)

    row, first_token = bk.db.run_write(setup)
    clock.advance(LEASE_MS + 1)

    def take_over(conn: Any) -> int:
        current = store.lock_command(conn, "ten_x", row.id)
        assert current is not None and not current.lease_live(clock.now_ms())
        return store.claim(conn, current, "second", clock.now_ms(), LEASE_MS)

    second_token = bk.db.run_write(take_over)
    assert second_token == first_token + 1

    def zombie_write(conn: Any) -> None:
        store.transition(
            conn,
            tenant_id="ten_x",
            command_id=row.id,
            fencing_token=first_token,
            from_state=store.CommandState.RUNNING,
            to_state=store.CommandState.RUNNING,
            recovery_point="attempt_recorded",
            actor="first",
            now_ms=clock.now_ms(),
        )

    with pytest.raises(LeaseLost):
        bk.db.run_write(zombie_write)
    after = bk.db.run_read(lambda c: store.load_command(c, "ten_x", row.id))
    assert after is not None and after.recovery_point == "started" and after.lease_owner == "second"


def test_wait_for_in_flight_key_returns_the_final_result(
    db_url: str, clock: ManualClock, make_billkeep: Any
) -> None:
    gateway = PausingGateway(clock=clock)
    bk: Billkeep = make_billkeep(db_url, gateway)
    tenant, _ = bk.tenants.create_tenant("wait", clock.now_ms())
    customer = bk.create_customer(tenant, {"payment_method": "pm_card_visa"}, "c").body()["id"]
    request = {"customer_id": customer, "amount": 300, "currency": "usd"}
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(bk.create_charge(tenant, request, "w")))
    thread.start()
    assert gateway.paused.wait(30)
    with pytest.raises(IdempotencyKeyInUse) as conflict:
        bk.execute(tenant, "charge.create", request, idempotency_key="w")
    assert conflict.value.retry_after_s >= 1
    threading.Timer(0.3, gateway.release.set).start()
    # ManualClock does not move by itself: wait_ms is bounded by polling rounds on the real clock.
    waited = _execute_waiting(bk, tenant, request, "w", clock)
    thread.join(30)
    assert waited.replayed and waited.body_text == first[0].body_text


def _execute_waiting(
    bk: Billkeep, tenant: str, request: dict[str, Any], key: str, clock: ManualClock
) -> Any:
    for _ in range(200):
        try:
            return bk.execute(tenant, "charge.create", request, idempotency_key=key, wait_ms=100)
        except IdempotencyKeyInUse:
            clock.advance(10)
    raise AssertionError("the first request never finished")


def test_key_retention_then_sweep_frees_key_and_keeps_history(
    bk: Billkeep, tenant: str, customer_id: str, clock: ManualClock
) -> None:
    request = {"customer_id": customer_id, "amount": 100, "currency": "usd"}
    first = bk.create_charge(tenant, request, "ttl-key")
    assert first.key_expires_at_ms == clock.now_ms() + 72 * 3600 * 1000
    clock.advance(72 * 3600 * 1000 - 1)
    assert bk.create_charge(tenant, request, "ttl-key").replayed
    worker = RecoveryWorker(bk)
    assert worker.sweep_keys() == 0
    clock.advance(1)
    assert worker.sweep_keys() == 2  # the customer's key and the charge's, made at the same instant
    second = bk.create_charge(tenant, request, "ttl-key")
    assert not second.replayed and second.command_id != first.command_id
    old = bk.queries.command(tenant, first.command_id)
    assert old["state"] == "succeeded" and len(old["history"]) >= 3
    assert len(bk.queries.charges(tenant).data) == 2


def test_same_key_in_two_tenants_is_two_commands(bk: Billkeep, clock: ManualClock) -> None:
    results = []
    for name in ("a", "b"):
        tenant, _ = bk.tenants.create_tenant(name, clock.now_ms())
        customer = bk.create_customer(tenant, {"payment_method": "pm_card_visa"}, "shared").body()[
            "id"
        ]
        results.append(
            bk.create_charge(
                tenant, {"customer_id": customer, "amount": 50, "currency": "usd"}, "shared"
            )
        )
    assert results[0].command_id != results[1].command_id
    assert not results[1].replayed
