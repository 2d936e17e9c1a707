"""Read models over HTTP, pagination, and tenant isolation (I10)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from tests.integration.api.conftest import Api

from billkeep.domain.clock import ManualClock


def _other_tenant(api: Api, clock: ManualClock) -> Api:
    tenant_id, key = api.billkeep.tenants.create_tenant("tenant b", clock.now_ms())
    return Api(api.client, api.billkeep, tenant_id, key, api.gateway)


def test_reads_of_every_resource(api: Api) -> None:
    customer_id = api.customer()
    charge = api.post(
        "/v1/charges", {"customer_id": customer_id, "amount": 500, "currency": "usd"}, "c"
    ).json()
    assert api.get(f"/v1/customers/{customer_id}").json()["id"] == customer_id
    assert api.get(f"/v1/charges/{charge['id']}").json() == charge
    listed = api.get("/v1/charges", customer_id=customer_id, status="succeeded").json()
    assert listed["object"] == "list" and [c["id"] for c in listed["data"]] == [charge["id"]]
    assert api.get("/v1/charges", status="failed").json()["data"] == []

    command = api.get(f"/v1/commands/{charge['command_id']}").json()
    assert command["operation"] == "charge.create" and command["state"] == "succeeded"
    assert command["idempotency_key"] == "c" and command["response"]["status"] == 201
    assert command["response"]["body"] == charge
    assert [h["state"] for h in command["history"]][-1] == "succeeded"
    ops = api.get("/v1/commands", operation="charge.create").json()["data"]
    assert [c["id"] for c in ops] == [charge["command_id"]]

    accounts = api.get("/v1/accounts").json()["data"]
    assert accounts and all(a["object"] == "account" for a in accounts)
    one = accounts[0]
    assert api.get(f"/v1/accounts/{one['id']}").json() == one
    entries = api.get("/v1/journal_entries", resource_id=charge["id"]).json()["data"]
    assert entries, "a succeeded charge posts journal entries"
    for entry in entries:
        debits = sum(p["amount"] for p in entry["postings"] if p["direction"] == "debit")
        credits = sum(p["amount"] for p in entry["postings"] if p["direction"] == "credit")
        assert debits == credits
    balance = api.get("/v1/ledger/trial_balance").json()
    assert balance["object"] == "trial_balance"
    assert all(line["debits"] == line["credits"] for line in balance["currencies"])
    assert {line["currency"] for line in balance["currencies"]} == {"usd"}


def test_pagination_walks_every_item_once(api: Api) -> None:
    ids = {api.customer(key=f"k{i}") for i in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/customers", **params).json()
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert seen == sorted(seen, reverse=True), "newest first"


def test_tenant_b_cannot_see_tenant_a(api: Api, clock: ManualClock) -> None:
    customer_id = api.customer()
    charge = api.post(
        "/v1/charges", {"customer_id": customer_id, "amount": 500, "currency": "usd"}, "c"
    ).json()
    b = _other_tenant(api, clock)
    for path in (
        f"/v1/customers/{customer_id}",
        f"/v1/charges/{charge['id']}",
        f"/v1/commands/{charge['command_id']}",
    ):
        response = b.get(path)
        assert response.status_code == 404 and response.json()["code"] == "resource_missing"
    for path in (
        "/v1/customers",
        "/v1/charges",
        "/v1/commands",
        "/v1/journal_entries",
        "/v1/accounts",
    ):
        assert b.get(path).json()["data"] == [], path
    assert b.get("/v1/ledger/trial_balance").json()["currencies"] == []
    # B cannot charge or refund A's objects either.
    assert (
        b.post(
            "/v1/charges", {"customer_id": customer_id, "amount": 1, "currency": "usd"}, "x"
        ).status_code
        == 422
    )
    assert b.post("/v1/refunds", {"charge_id": charge["id"]}, "y").status_code == 404


def test_same_key_in_two_tenants_makes_two_commands(api: Api, clock: ManualClock) -> None:
    b = _other_tenant(api, clock)
    a_customer = api.post("/v1/customers", {"name": "same"}, "shared-key")
    b_customer = b.post("/v1/customers", {"name": "same"}, "shared-key")
    assert a_customer.status_code == b_customer.status_code == 201
    assert "idempotent-replayed" not in b_customer.headers
    assert a_customer.json()["id"] != b_customer.json()["id"]
    assert a_customer.headers["billkeep-command-id"] != b_customer.headers["billkeep-command-id"]
    # And a different body under the same key in B is not a reuse of A's key.
    assert (
        b.post("/v1/customers", {"name": "same"}, "shared-key").headers["idempotent-replayed"]
        == "true"
    )


def test_metrics_count_requests_commands_replays_and_refusals(
    sqlite_url: str, make_api: Callable[..., Api]
) -> None:
    api = make_api(sqlite_url)
    client: TestClient = api.client

    def sample(series: str) -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    replays = 'billkeep_idempotent_replays_total{operation="customer.create"}'
    reused = "billkeep_idempotency_key_reused_total"
    requests = 'billkeep_http_requests_total{method="POST",route="/v1/customers",status="201"}'
    before = (sample(replays), sample(reused), sample(requests))
    api.post("/v1/customers", {"name": "m"}, "m1")
    api.post("/v1/customers", {"name": "m"}, "m1")
    api.post("/v1/customers", {"name": "other"}, "m1")
    after = (sample(replays), sample(reused), sample(requests))
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == 1
    assert after[2] - before[2] == 2
    text = client.get("/metrics").text
    assert (
        'billkeep_commands_total{final="true",operation="customer.create",state="succeeded"}'
        in text
    )
    assert "billkeep_http_request_duration_seconds_bucket" in text
