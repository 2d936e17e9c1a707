"""Commands through HTTP on both engines: charges, refunds, customers and their idempotency."""

from __future__ import annotations

import threading
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tests.integration.api.conftest import Api, BlockingFaults

from billkeep.domain.clock import ManualClock
from billkeep.gateways.fake import FakeGateway, Fault
from billkeep.storage.tables.core import charges, commands

PROBLEM = "application/problem+json"


def _charge(customer_id: str, amount: Any = 1000, **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "amount": amount, "currency": "usd", **extra}


def _rows(api: Api, table: Any) -> list[Any]:
    with api.billkeep.db.read() as conn:
        return list(conn.execute(table.select().where(table.c.tenant_id == api.tenant_id)).all())


def test_charge_201_and_byte_identical_replay(api: Api, clock: ManualClock) -> None:
    customer_id = api.customer()
    first = api.post("/v1/charges", _charge(customer_id), "ch-1")
    assert first.status_code == 201 and first.headers["content-type"] == "application/json"
    body = first.json()
    assert body["status"] == "succeeded" and body["object"] == "charge"
    assert first.headers["billkeep-command-id"] == body["command_id"]
    assert "idempotent-replayed" not in first.headers
    expires = parsedate_to_datetime(first.headers["idempotency-key-expires"])
    assert int(expires.timestamp() * 1000) // 1000 == (clock.now_ms() + 72 * 3600 * 1000) // 1000

    # Same request, other key order and spacing: a replay, byte for byte.
    reordered = f'{{ "currency":"usd",  "amount":1000, "customer_id":"{customer_id}" }}'
    again = api.client.post(
        "/v1/charges",
        content=reordered.encode(),
        headers={**api.auth, "Idempotency-Key": "ch-1"},
    )
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["billkeep-command-id"] == first.headers["billkeep-command-id"]
    assert again.headers["idempotency-key-expires"] == first.headers["idempotency-key-expires"]
    assert len(_rows(api, charges)) == 1
    assert api.gateway.succeeded_by_command() == {body["command_id"]: 1}


def test_declined_charge_is_402_and_final(api: Api) -> None:
    customer_id = api.customer()
    response = api.post(
        "/v1/charges", _charge(customer_id, payment_method="pm_card_chargeDeclined"), "ch-d"
    )
    assert response.status_code == 402 and response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "failed"
    assert response.json()["failure"]["code"] == "card_declined"
    replay = api.post(
        "/v1/charges", _charge(customer_id, payment_method="pm_card_chargeDeclined"), "ch-d"
    )
    assert replay.status_code == 402 and replay.content == response.content
    assert replay.headers["idempotent-replayed"] == "true"


def test_unknown_outcome_is_202_pending_with_retry_after_then_resolves_on_retry(
    db_url: str, make_api: Callable[..., Api], clock: ManualClock
) -> None:
    faults: list[Fault | None] = [Fault.UNKNOWN_AFTER]
    gateway = FakeGateway(clock=clock, faults=lambda _op, _key: faults.pop() if faults else None)
    api = make_api(db_url, gateway)
    customer_id = api.customer()
    pending = api.post("/v1/charges", _charge(customer_id), "ch-u")
    assert pending.status_code == 202
    assert pending.json()["status"] == "pending"
    assert int(pending.headers["retry-after"]) >= 1
    assert "idempotency-key-expires" not in pending.headers
    # The retry resumes the command: the payment that happened is found, not made again.
    final = api.post("/v1/charges", _charge(customer_id), "ch-u")
    assert final.status_code == 201 and final.json()["status"] == "succeeded"
    assert "idempotent-replayed" not in final.headers
    assert api.gateway.succeeded_by_command() == {final.json()["command_id"]: 1}


def test_same_key_other_body_is_422_reused_and_nothing_runs(api: Api) -> None:
    customer_id = api.customer()
    assert api.post("/v1/charges", _charge(customer_id), "ch-r").status_code == 201
    reused = api.post("/v1/charges", _charge(customer_id, amount=999), "ch-r")
    assert reused.status_code == 422 and reused.headers["content-type"] == PROBLEM
    assert reused.json()["code"] == "idempotency_key_reused"
    assert len(_rows(api, charges)) == 1 and api.gateway.payment_count() == 1


def test_key_scope_is_the_route(api: Api) -> None:
    customer_id = api.customer(key="shared")
    charge = api.post("/v1/charges", _charge(customer_id), "shared")
    assert charge.status_code == 201, "the same key on another route is another key"


INVALID_FIELDS: list[tuple[str, Any]] = [
    ("amount", 10.0),
    ("amount", 10.5),
    ("amount", "100"),
    ("amount", True),
    ("amount", -5),
    ("amount", 0),
    ("amount", 10**20),
    ("amount", None),
    ("currency", "usd "),
    ("currency", "USD"),
    ("currency", "xxx"),
    ("currency", 840),
    ("customer_id", 5),
    ("metadata", {"k": 1}),
    ("invoice_id", "inv_x"),
    ("surprise", 1),
]


def test_invalid_money_and_fields_are_422_naming_the_field(api: Api) -> None:
    customer_id = api.customer()
    for field, value in INVALID_FIELDS:
        body = _charge(customer_id)
        body[field] = value
        response = api.post("/v1/charges", body, "ch-v")
        assert response.status_code == 422, (field, value, response.text)
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert any(e["field"].startswith(field) for e in problem["errors"]), problem
    # Nothing recorded: the key is still unused and works for a valid request.
    assert [c.operation for c in _rows(api, commands)] == ["customer.create"]
    assert api.post("/v1/charges", _charge(customer_id), "ch-v").status_code == 201


def test_1e20_literal_is_rejected(api: Api) -> None:
    customer_id = api.customer()
    raw = f'{{"customer_id": "{customer_id}", "amount": 1e20, "currency": "usd"}}'
    response = api.client.post(
        "/v1/charges", content=raw.encode(), headers={**api.auth, "Idempotency-Key": "k"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "amount"


def test_unknown_customer_is_422_naming_customer_id(api: Api) -> None:
    response = api.post("/v1/charges", _charge("cus_nope"), "ch-x")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "customer_id", "message": "no such customer"}]


def test_key_in_use_is_409_with_retry_after_and_prefer_wait_waits(
    db_url: str, make_api: Callable[..., Api], clock: ManualClock
) -> None:
    blocking = BlockingFaults()
    api = make_api(db_url, FakeGateway(clock=clock, faults=blocking))
    customer_id = api.customer()
    results: dict[str, httpx.Response] = {}
    first = threading.Thread(
        target=lambda: results.update(first=api.post("/v1/charges", _charge(customer_id), "busy"))
    )
    first.start()
    try:
        assert blocking.entered.wait(10)
        in_use = api.post("/v1/charges", _charge(customer_id), "busy")
        assert in_use.status_code == 409 and in_use.headers["content-type"] == PROBLEM
        assert in_use.json()["code"] == "idempotency_key_in_use"
        assert int(in_use.headers["retry-after"]) >= 1
        # With Prefer: wait, the second request waits for the first and replays its outcome.
        waiter = threading.Thread(
            target=lambda: results.update(
                waited=api.post("/v1/charges", _charge(customer_id), "busy", Prefer="wait=10")
            )
        )
        waiter.start()
        threading.Timer(0.3, blocking.release.set).start()
        waiter.join(20)
    finally:
        blocking.release.set()
        first.join(20)
    assert results["first"].status_code == 201
    assert results["waited"].status_code == 201
    assert results["waited"].content == results["first"].content
    assert results["waited"].headers["idempotent-replayed"] == "true"
    assert api.gateway.payment_count() == 1


def test_customer_external_id_conflict_is_409_final(api: Api) -> None:
    api.customer(key="c1", external_id="ext-1")
    taken = api.post("/v1/customers", {"external_id": "ext-1"}, "c2")
    assert taken.status_code == 409 and taken.headers["content-type"] == PROBLEM
    assert taken.json()["code"] == "external_id_taken"
    replay = api.post("/v1/customers", {"external_id": "ext-1"}, "c2")
    assert replay.content == taken.content and replay.headers["idempotent-replayed"] == "true"


def test_refunds_201_422_409(api: Api) -> None:
    customer_id = api.customer()
    charge = api.post("/v1/charges", _charge(customer_id, amount=100), "ch").json()
    refund = api.post("/v1/refunds", {"charge_id": charge["id"], "amount": 60}, "r1")
    assert refund.status_code == 201, refund.text
    assert refund.json()["amount"] == 60 and refund.json()["object"] == "refund"
    too_much = api.post("/v1/refunds", {"charge_id": charge["id"], "amount": 60}, "r2")
    assert too_much.status_code == 422 and too_much.json()["code"] == "refund_exceeds_charge"
    rest = api.post("/v1/refunds", {"charge_id": charge["id"]}, "r3")
    assert rest.status_code == 201 and rest.json()["amount"] == 40
    assert api.get(f"/v1/refunds/{refund.json()['id']}").json() == refund.json()
    failed = api.post(
        "/v1/charges", _charge(customer_id, payment_method="pm_card_chargeDeclined"), "ch-f"
    ).json()
    refused = api.post("/v1/refunds", {"charge_id": failed["id"]}, "r4")
    assert refused.status_code == 409 and refused.json()["code"] == "charge_not_refundable"
    missing = api.post("/v1/refunds", {"charge_id": "ch_nope"}, "r5")
    assert missing.status_code == 404 and missing.json()["code"] == "resource_missing"
