"""The billing routes over HTTP (in-process app, SQLite): commands, usage, reads, errors."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient
from tests.integration.billing.helpers import iso

from billkeep.api.app import create_app
from billkeep.domain.clock import ManualClock
from billkeep.domain.periods import MS_PER_DAY
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway


def test_plan_to_paid_invoice_over_http(
    sqlite_url: str, make_billkeep: Callable[..., Billkeep], clock: ManualClock
) -> None:
    bk = make_billkeep(sqlite_url, FakeGateway(clock=clock))
    _tenant, key = bk.tenants.create_tenant("http", clock.now_ms())
    client = TestClient(create_app(bk), raise_server_exceptions=False)
    auth = {"Authorization": f"Bearer {key}"}

    def post(path: str, body: object, idem: str | None = None) -> httpx.Response:
        headers = dict(auth, **({"Idempotency-Key": idem} if idem else {}))
        response: httpx.Response = client.post(path, json=body, headers=headers)
        return response

    metric = post("/v1/metrics", {"code": "api", "name": "API", "aggregation": "count"}, "m")
    assert metric.status_code == 201, metric.text
    plan_body = {
        "code": "pro",
        "name": "Pro",
        "currency": "usd",
        "interval": "month",
        "prices": [
            {"type": "flat", "amount": 900},
            {"type": "per_unit", "metric": "api", "unit_amount": 2},
        ],
    }
    plan = post("/v1/plans", plan_body, "p")
    assert plan.status_code == 201
    assert post("/v1/plans", plan_body).status_code == 400
    customer = post("/v1/customers", {"payment_method": "pm_card_visa"}, "c")
    sub = post(
        "/v1/subscriptions",
        {"customer_id": customer.json()["id"], "plan_id": plan.json()["id"]},
        "s",
    )
    assert sub.status_code == 201 and sub.json()["status"] == "active"
    sub_id = sub.json()["id"]
    clock.advance(MS_PER_DAY)
    events = [
        {
            "event_id": f"e{n}",
            "subscription_id": sub_id,
            "metric": "api",
            "timestamp": iso(clock.now_ms()),
        }
        for n in range(3)
    ]
    usage = post("/v1/usage_events", {"events": [*events, events[0]]})
    assert usage.status_code == 200
    assert usage.json() == {
        "object": "usage_ingestion",
        "accepted": 3,
        "duplicates": 1,
        "rejected": [],
    }
    upcoming = client.get(f"/v1/subscriptions/{sub_id}/upcoming_invoice", headers=auth)
    assert upcoming.json()["total"] == 906
    clock.advance(31 * MS_PER_DAY)
    run = post("/v1/billing_runs", {"as_of": iso(clock.now_ms())}, "r")
    assert run.status_code == 201, run.text
    assert run.json()["invoices_created"] == 1
    listed = client.get("/v1/invoices", headers=auth, params={"subscription_id": sub_id})
    [invoice] = listed.json()["data"]
    assert (invoice["status"], invoice["total"], len(invoice["lines"])) == ("paid", 906, 2)
    one = client.get(f"/v1/invoices/{invoice['id']}", headers=auth).json()
    assert one["attempts"][0]["status"] == "succeeded" and one["next_attempt_at"] is None
    cancel = post(f"/v1/subscriptions/{sub_id}/cancel", {"at_period_end": True}, "x")
    assert cancel.status_code == 200 and cancel.json()["cancel_at_period_end"] is True
    assert client.get("/v1/invoices/inv_nope", headers=auth).status_code == 404
    assert "/v1/usage_events" in client.get("/openapi.json").json()["paths"]
