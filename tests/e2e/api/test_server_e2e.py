"""End to end against a real `billkeep serve` on PostgreSQL: concurrency, crashes, metrics."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
from tests.e2e.api.conftest import Server, Tenant, client, create_customer, start, stop

from billkeep.gateways.fake import FakeGateway
from billkeep.storage.database import Database
from billkeep.storage.tables.core import charges

pytestmark = pytest.mark.postgres

CONCURRENT_REQUESTS = 50
CRASH_RETRY_DEADLINE_S = 60.0  # covers the crashed request's lease (30 s) running out


def _charges_of(server: Server, tenant: Tenant) -> list[sa.Row[tuple[object, ...]]]:
    db = Database(server.database_url)
    try:
        with db.read() as conn:
            return list(
                conn.execute(
                    sa.select(charges).where(charges.c.tenant_id == tenant.tenant_id)
                ).all()
            )
    finally:
        db.dispose()


def test_concurrent_identical_posts_make_one_charge_and_metrics_add_up(
    make_server: Callable[..., Server], e2e_tenant: Tenant
) -> None:
    server = make_server(workers=2)
    customer_id = create_customer(server, e2e_tenant)
    body = {"customer_id": customer_id, "amount": 4200, "currency": "usd"}
    barrier = threading.Barrier(CONCURRENT_REQUESTS)

    def post(_: int) -> httpx.Response:
        with client(server, e2e_tenant) as http:
            barrier.wait()
            return http.post("/v1/charges", json=body, headers={"Idempotency-Key": "same-key"})

    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        responses = list(pool.map(post, range(CONCURRENT_REQUESTS)))

    statuses = {r.status_code for r in responses}
    assert statuses <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    assert created, "at least the first request completes"
    assert len({r.content for r in created}) == 1, "every 201 is byte-identical"
    assert sum(1 for r in created if "idempotent-replayed" not in r.headers) <= 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.json()["code"] == "idempotency_key_in_use"
        assert int(conflict.headers["retry-after"]) >= 1
    rows = _charges_of(server, e2e_tenant)
    assert len(rows) == 1 and rows[0].status == "succeeded"
    assert FakeGateway(server.gateway_path).succeeded_by_command() == {rows[0].command_id: 1}

    # Metrics are aggregated over both workers: every request above is counted once.
    with client(server, e2e_tenant) as http:
        text = http.get("/metrics").text
    counted = 0.0
    for line in text.splitlines():
        if (
            line.startswith("billkeep_http_requests_total{")
            and 'route="/v1/charges"' in line
            and 'method="POST"' in line
        ):
            counted += float(line.rsplit(" ", 1)[1])
    assert counted == CONCURRENT_REQUESTS, text


def _post_until_final(
    server: Server, tenant: Tenant, body: dict[str, object], key: str
) -> httpx.Response:
    deadline = time.monotonic() + CRASH_RETRY_DEADLINE_S
    with client(server, tenant) as http:
        while True:
            response = http.post(
                "/v1/charges", json=body, headers={"Idempotency-Key": key, "Prefer": "wait=10"}
            )
            if response.status_code != 409 or time.monotonic() > deadline:
                return response
            time.sleep(min(float(response.headers.get("retry-after", "1")), 5.0))


@pytest.mark.chaos
@pytest.mark.parametrize(
    "crash_at", ["charge.create:attempt_recorded:after_call", "charge.create:started:after_commit"]
)
def test_crash_mid_request_then_retry_gives_one_charge(
    make_server: Callable[..., Server], e2e_tenant: Tenant, crash_at: str
) -> None:
    server = make_server()
    customer_id = create_customer(server, e2e_tenant)
    stop(server)
    start(server, env={"BILLKEEP_CRASH_AT": crash_at})
    body = {"customer_id": customer_id, "amount": 777, "currency": "usd"}
    with client(server, e2e_tenant) as http, pytest.raises(httpx.TransportError):
        http.post("/v1/charges", json=body, headers={"Idempotency-Key": "crash-key"})
    assert server.process is not None
    assert server.process.wait(10) != 0, "the server died at the crash point"

    start(server)  # no crash point this time
    final = _post_until_final(server, e2e_tenant, body, "crash-key")
    assert final.status_code == 201, final.text
    rows = _charges_of(server, e2e_tenant)
    assert len(rows) == 1 and rows[0].status == "succeeded"
    assert FakeGateway(server.gateway_path).succeeded_by_command() == {rows[0].command_id: 1}
    again = _post_until_final(server, e2e_tenant, body, "crash-key")
    assert again.content == final.content and again.headers["idempotent-replayed"] == "true"


def test_sigkill_of_the_server_then_retry_gives_one_charge(
    make_server: Callable[..., Server], e2e_tenant: Tenant
) -> None:
    server = make_server()
    customer_id = create_customer(server, e2e_tenant)
    body = {"customer_id": customer_id, "amount": 555, "currency": "usd"}
    with client(server, e2e_tenant) as http:
        first = http.post("/v1/charges", json=body, headers={"Idempotency-Key": "kill-key"})
    assert first.status_code == 201
    stop(server, signal.SIGKILL)
    start(server)
    again = _post_until_final(server, e2e_tenant, body, "kill-key")
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert len(_charges_of(server, e2e_tenant)) == 1


def test_concurrent_refunds_never_exceed_the_charge(
    make_server: Callable[..., Server], e2e_tenant: Tenant
) -> None:
    server = make_server(workers=2)
    customer_id = create_customer(server, e2e_tenant)
    rounds = 5
    for n in range(rounds):
        with client(server, e2e_tenant) as http:
            charge = http.post(
                "/v1/charges",
                json={"customer_id": customer_id, "amount": 100, "currency": "usd"},
                headers={"Idempotency-Key": f"refund-charge-{n}"},
            ).json()
        barrier = threading.Barrier(2)

        def refund(
            i: int, charge_id: str = charge["id"], n: int = n, gate: threading.Barrier = barrier
        ) -> httpx.Response:
            with client(server, e2e_tenant) as http:
                gate.wait()
                return http.post(
                    "/v1/refunds",
                    json={"charge_id": charge_id, "amount": 60},
                    headers={"Idempotency-Key": f"refund-{n}-{i}"},
                )

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(refund, range(2)))
        assert sorted(r.status_code for r in results) == [201, 422], [r.text for r in results]
        refused = next(r for r in results if r.status_code == 422)
        assert refused.json()["code"] == "refund_exceeds_charge"
    refunded = FakeGateway(server.gateway_path).refunded_by_payment()
    assert sorted(refunded.values()) == [60] * rounds
