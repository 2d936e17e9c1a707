"""Resources of every kind the OpenAPI document describes, created through the API itself, so the
conformance tests validate real responses (lists with items, objects by their real ids) instead
of only 404s and 422s from generated ids and bodies.

Every request here goes through schemathesis' `call_and_validate`: each seeding response is checked
against the document too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from schemathesis import checks
from schemathesis.schemas import BaseSchema
from tests.integration.api.conftest import Api

from billkeep.domain.clock import ms_to_rfc3339
from billkeep.gateways.signing import sign_header
from billkeep.reconciliation.operation import install as install_reconciliation
from billkeep.reconciliation.runner import ReconciliationConfig
from billkeep.reconciliation.sources import InMemorySource
from billkeep.webhooks.endpoints import GatewayEndpoint, StaticWebhookEndpoints
from billkeep.webhooks.service import WebhookService

__all__ = ["CHECKS", "WEBHOOK_GATEWAY", "Seeded", "prepare_app", "seed"]

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
WEBHOOK_GATEWAY = "gw_conformance"
WEBHOOK_SECRET = "whsec_conformance"
DAY_MS = 86_400_000


@dataclass
class Seeded:
    """Path parameters of a real object for each `GET .../{id}` operation, by operation label."""

    path_parameters: dict[str, dict[str, str]] = field(default_factory=dict)


def prepare_app(api: Api) -> None:
    """Reconciliation against an empty in-memory gateway record (every local charge becomes a
    `missing_at_gateway` break) and a webhook endpoint with a known secret: no network."""
    install_reconciliation(
        api.billkeep, lambda _t, _g: InMemorySource([]), ReconciliationConfig(grace_period_ms=0)
    )
    app = api.client.app
    assert isinstance(app, FastAPI)
    endpoints = StaticWebhookEndpoints(
        [GatewayEndpoint(api.tenant_id, WEBHOOK_GATEWAY, (WEBHOOK_SECRET,))]
    )
    app.state.webhook_service = WebhookService.create(
        api.billkeep.db, api.billkeep.clock, endpoints
    )


class _Caller:
    def __init__(self, schema: BaseSchema, api: Api) -> None:
        self.schema = schema
        self.api = api
        self.keys = 0

    def __call__(
        self,
        method: str,
        path: str,
        status: int,
        *,
        path_parameters: dict[str, str] | None = None,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> Any:
        operation = self.schema[path][method]
        sent = dict(self.api.auth) if authenticated else {}
        if method == "POST" and authenticated and path != "/v1/usage_events":
            self.keys += 1
            sent["Idempotency-Key"] = f"seed-{self.keys}"
        sent.update(headers or {})
        kwargs: dict[str, Any] = {"path_parameters": path_parameters or {}, "query": query}
        if body is not None:
            kwargs["body"] = body
            kwargs["media_type"] = "application/json"
        case = operation.Case(**kwargs)
        response = case.call_and_validate(headers=sent, checks=CHECKS)
        assert response.status_code == status, (method, path, response.text)
        return response


def _webhook(call: _Caller, api: Api, charge_reference: str | None) -> str:
    now_s = api.billkeep.clock.now_ms() // 1000
    event = {
        "id": "evt_conformance_1",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": now_s,
        "data": {"object": {"id": charge_reference or "pi_unknown", "object": "payment_intent"}},
    }
    raw = json.dumps(event, separators=(",", ":")).encode()
    received = call(
        "POST",
        "/v1/webhooks/{gateway_id}",
        200,
        path_parameters={"gateway_id": WEBHOOK_GATEWAY},
        body=raw,  # sent as is: the signature covers these exact bytes
        headers={"Stripe-Signature": sign_header(raw, [WEBHOOK_SECRET], now_s)},
        authenticated=False,
    )
    assert received.json() == {"received": True, "duplicate": False}
    listed = call("GET", "/v1/webhook_events", 200).json()["data"]
    return str(listed[0]["id"])


def seed(schema: BaseSchema, api: Api, customer_id: str) -> Seeded:
    """Create one of everything (billing, a charge and its refund, a reconciliation with a break,
    a webhook event); returns the real ids to read them back with."""
    call = _Caller(schema, api)
    now_ms = api.billkeep.clock.now_ms()
    call(
        "POST",
        "/v1/metrics",
        201,
        body={"code": "api_calls", "name": "API calls", "aggregation": "sum", "property": "n"},
    )
    metric_id = call("GET", "/v1/metrics", 200).json()["data"][0]["id"]
    tiers = [{"up_to": 10, "unit_amount": 0}, {"up_to": None, "unit_amount": 3, "flat_amount": 5}]
    plan = call(
        "POST",
        "/v1/plans",
        201,
        body={
            "code": "pro",
            "name": "Pro",
            "currency": "usd",
            "interval": "month",
            "prices": [
                {"type": "flat", "amount": 1000, "description": "Base fee"},
                {"type": "per_unit", "metric": "api_calls", "unit_amount": 2},
                {"type": "graduated", "metric": "api_calls", "tiers": tiers},
                {"type": "volume", "metric": "api_calls", "tiers": tiers},
                {"type": "package", "metric": "api_calls", "package_size": 5, "package_amount": 7},
            ],
        },
    ).json()
    subscription = call(
        "POST",
        "/v1/subscriptions",
        201,
        body={
            "customer_id": customer_id,
            "plan_id": plan["id"],
            "start_at": ms_to_rfc3339(now_ms - 40 * DAY_MS),
        },
    ).json()
    ingested = call(
        "POST",
        "/v1/usage_events",
        200,
        body={
            "events": [
                {
                    "event_id": f"ev_{n}",
                    "subscription_id": subscription["id"],
                    "metric": "api_calls",
                    "timestamp": ms_to_rfc3339(now_ms - (38 - n) * DAY_MS),
                    "properties": {"n": 4},
                }
                for n in range(3)
            ]
            + [{"event_id": "ev_bad", "metric": "api_calls"}],
        },
    ).json()
    assert (ingested["accepted"], len(ingested["rejected"])) == (3, 1), ingested
    run = call("POST", "/v1/billing_runs", 201, body={"as_of": ms_to_rfc3339(now_ms)}).json()
    invoice_id = call("GET", "/v1/invoices", 200).json()["data"][0]["id"]
    trial_plan = call(
        "POST",
        "/v1/plans",
        201,
        body={
            "code": "trial",
            "name": "Trial",
            "currency": "usd",
            "interval": "year",
            "trial_days": 14,
            "prices": [{"type": "flat", "amount": 100}],
        },
    ).json()
    other = call(
        "POST",
        "/v1/subscriptions",
        201,
        body={"customer_id": customer_id, "plan_id": trial_plan["id"]},
    ).json()
    call(
        "POST",
        "/v1/subscriptions/{subscription_id}/cancel",
        200,
        path_parameters={"subscription_id": other["id"]},
        body={"at_period_end": True},
    )
    charge = call(
        "POST",
        "/v1/charges",
        201,
        body={"customer_id": customer_id, "amount": 500, "currency": "usd"},
    )
    refund = call(
        "POST", "/v1/refunds", 201, body={"charge_id": charge.json()["id"], "amount": 100}
    )
    account_id = call("GET", "/v1/accounts", 200, query={"customer_id": customer_id}).json()[
        "data"
    ][0]["id"]
    reconciliation = call(
        "POST",
        "/v1/reconciliations",
        201,
        body={
            "gateway_id": charge.json()["gateway"],
            "from": ms_to_rfc3339(now_ms - DAY_MS),
            "to": ms_to_rfc3339(now_ms + DAY_MS),
        },
    ).json()
    assert reconciliation["summary"]["breaks"]["missing_at_gateway"] >= 1, reconciliation
    event_row_id = _webhook(call, api, charge.json()["gateway_reference"])
    return Seeded(
        {
            "GET /v1/customers/{customer_id}": {"customer_id": customer_id},
            "GET /v1/charges/{charge_id}": {"charge_id": charge.json()["id"]},
            "GET /v1/refunds/{refund_id}": {"refund_id": refund.json()["id"]},
            # schemathesis keeps headers lowercased, each a list of values.
            "GET /v1/commands/{command_id}": {
                "command_id": charge.headers["billkeep-command-id"][0]
            },
            "GET /v1/accounts/{account_id}": {"account_id": account_id},
            "GET /v1/metrics/{metric_id}": {"metric_id": metric_id},
            "GET /v1/plans/{plan_id}": {"plan_id": plan["id"]},
            "GET /v1/subscriptions/{subscription_id}": {"subscription_id": subscription["id"]},
            "GET /v1/subscriptions/{subscription_id}/upcoming_invoice": {
                "subscription_id": subscription["id"]
            },
            "GET /v1/billing_runs/{run_id}": {"run_id": run["id"]},
            "GET /v1/invoices/{invoice_id}": {"invoice_id": invoice_id},
            "GET /v1/reconciliations/{run_id}": {"run_id": reconciliation["id"]},
            "GET /v1/reconciliations/{run_id}/breaks": {"run_id": reconciliation["id"]},
            "GET /v1/webhook_events/{event_row_id}": {"event_row_id": event_row_id},
        }
    )
