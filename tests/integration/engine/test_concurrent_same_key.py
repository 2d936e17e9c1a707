"""Many callers, one key, at the same instant: exactly one effect; each caller gets the same
final result or an in-use conflict. 32 threads, then 4 processes, on both engines."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

from billkeep.domain.errors import IdempotencyKeyInUse
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database

THREADS = 32
PROCESSES = 4


def _outcome(bk: Billkeep, tenant: str, request: dict[str, Any], key: str) -> tuple[int, str] | str:
    try:
        result = bk.create_charge(tenant, request, key)
    except IdempotencyKeyInUse:
        return "in_use"
    return result.status, result.body_text


def test_32_threads_same_key_one_effect(
    bk: Billkeep, tenant: str, customer_id: str, gateway: FakeGateway
) -> None:
    request = {"customer_id": customer_id, "amount": 4200, "currency": "usd"}
    barrier = threading.Barrier(THREADS)
    outcomes: list[tuple[int, str] | str] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait()
        outcome = _outcome(bk, tenant, request, "same-key")
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=client) for _ in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert len(outcomes) == THREADS
    finals = {o for o in outcomes if o != "in_use"}
    assert len(finals) == 1, f"every final answer must be identical, got {len(finals)} variants"
    status, _body = next(iter(finals))  # type: ignore[misc]
    assert status == 201
    assert list(gateway.succeeded_by_command().values()) == [1]
    assert len(bk.queries.charges(tenant).data) == 1


def _process_client(
    url: str, gateway_path: str, tenant: str, request: dict[str, Any], start: Any, out: Any
) -> None:
    bk = Billkeep(Database(url), StaticGatewayDirectory(FakeGateway(gateway_path)))
    start.wait()
    out.put(_outcome(bk, tenant, request, "proc-key"))
    bk.close()


def test_4_processes_same_key_one_effect(db_url: str, tmp_path: Path, make_billkeep: Any) -> None:
    gateway_path = str(tmp_path / "gateway.db")
    bk = make_billkeep(db_url, FakeGateway(gateway_path))
    tenant, _ = bk.tenants.create_tenant("procs", bk.clock.now_ms())
    customer = bk.create_customer(tenant, {"payment_method": "pm_card_visa"}, "c").body()["id"]
    request = {"customer_id": customer, "amount": 777, "currency": "usd"}
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_process_client, args=(db_url, gateway_path, tenant, request, start, out)
        )
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    start.set()
    outcomes = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    finals = {tuple(o) for o in outcomes if o != "in_use"}
    assert len(finals) <= 1 and (len(finals) == 1 or outcomes.count("in_use") == PROCESSES)
    # However the race went, a retry now settles it, and there is exactly one payment.
    final = bk.create_charge(tenant, request, "proc-key")
    assert final.status == 201
    assert all(tuple(o) == (final.status, final.body_text) for o in outcomes if o != "in_use")
    assert list(FakeGateway(gateway_path).succeeded_by_command().values()) == [1]
