"""Billing: metrics, plans, subscriptions (+cancel, +upcoming invoice), usage events, billing runs,
invoices. Every POST except usage events is an engine command (Idempotency-Key); usage events are
deduplicated by their own `event_id` instead."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from billkeep.api.deps import Command, Engine, JsonBody, Tenant, json_response
from billkeep.api.models_billing import (
    INVOICE_STATUSES,
    BillingRun,
    BillingRunCreate,
    Invoice,
    InvoiceList,
    Metric,
    MetricCreate,
    MetricList,
    Plan,
    PlanCreate,
    PlanList,
    Subscription,
    SubscriptionCancel,
    SubscriptionCreate,
    SubscriptionList,
    UpcomingInvoice,
    UsageEventsCreate,
    UsageIngestion,
)
from billkeep.api.openapi import body_route, command_route, read_route
from billkeep.billing.queries import BillingQueries
from billkeep.billing.usage_ingest import ingest_usage_events
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT
from billkeep.engine.service import Billkeep

__all__ = ["router"]

router = APIRouter(tags=["billing"])

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


def _queries(billkeep: Billkeep) -> BillingQueries:
    return BillingQueries(billkeep.db, billkeep.clock)


# --- metrics and plans -------------------------------------------------------------------------
@router.post(
    "/v1/metrics", **command_route(MetricCreate, {201: Metric}, summary="Create a billable metric")
)
def create_metric(command: Command, body: JsonBody) -> Response:
    return command.run("metric.create", body)


@router.get("/v1/metrics/{metric_id}", **read_route(Metric, (404,), summary="Retrieve a metric"))
def get_metric(metric_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(_queries(billkeep).metric(tenant_id, metric_id))


@router.get("/v1/metrics", **read_route(MetricList, summary="List metrics"))
def list_metrics(
    tenant_id: Tenant, billkeep: Engine, limit: Limit = DEFAULT_PAGE_LIMIT, cursor: Cursor = None
) -> Response:
    return json_response(_queries(billkeep).metrics(tenant_id, limit, cursor).as_dict())


@router.post(
    "/v1/plans",
    **command_route(PlanCreate, {201: Plan}, summary="Create a plan (plans are immutable)"),
)
def create_plan(command: Command, body: JsonBody) -> Response:
    return command.run("plan.create", body)


@router.get("/v1/plans/{plan_id}", **read_route(Plan, (404,), summary="Retrieve a plan"))
def get_plan(plan_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(_queries(billkeep).plan(tenant_id, plan_id))


@router.get("/v1/plans", **read_route(PlanList, summary="List plans"))
def list_plans(
    tenant_id: Tenant, billkeep: Engine, limit: Limit = DEFAULT_PAGE_LIMIT, cursor: Cursor = None
) -> Response:
    return json_response(_queries(billkeep).plans(tenant_id, limit, cursor).as_dict())


# --- subscriptions ---------------------------------------------------------------------------------
@router.post(
    "/v1/subscriptions",
    **command_route(SubscriptionCreate, {201: Subscription}, summary="Subscribe a customer"),
)
def create_subscription(command: Command, body: JsonBody) -> Response:
    return command.run("subscription.create", body)


@router.post(
    "/v1/subscriptions/{subscription_id}/cancel",
    **command_route(
        SubscriptionCancel, {200: Subscription}, (404,), summary="Cancel now or at period end"
    ),
)
def cancel_subscription(subscription_id: str, command: Command, body: JsonBody) -> Response:
    return command.run("subscription.cancel", {**body, "subscription_id": subscription_id})


@router.get(
    "/v1/subscriptions/{subscription_id}",
    **read_route(Subscription, (404,), summary="Retrieve a subscription"),
)
def get_subscription(subscription_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(_queries(billkeep).subscription(tenant_id, subscription_id))


@router.get("/v1/subscriptions", **read_route(SubscriptionList, summary="List subscriptions"))
def list_subscriptions(
    tenant_id: Tenant,
    billkeep: Engine,
    customer_id: str | None = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    page = _queries(billkeep).subscriptions(tenant_id, customer_id, limit, cursor)
    return json_response(page.as_dict())


@router.get(
    "/v1/subscriptions/{subscription_id}/upcoming_invoice",
    **read_route(UpcomingInvoice, (404,), summary="Preview the next invoice (dry run)"),
)
def get_upcoming_invoice(subscription_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(_queries(billkeep).upcoming_invoice(tenant_id, subscription_id))


# --- usage events --------------------------------------------------------------------------------
@router.post(
    "/v1/usage_events",
    # Not a command: events are deduplicated by their own event_id, no Idempotency-Key.
    **body_route(
        UsageEventsCreate,
        {200: UsageIngestion},
        (400, 401, 413, 422, 500, 503),
        summary="Ingest up to 1000 usage events (deduplicated by event_id; no Idempotency-Key)",
    ),
)
def ingest_usage(tenant_id: Tenant, billkeep: Engine, body: JsonBody) -> Response:
    result = ingest_usage_events(billkeep.db, tenant_id, body, billkeep.clock.now_ms())
    return json_response(result.as_dict())


# --- billing runs and invoices -------------------------------------------------------------------
@router.post(
    "/v1/billing_runs",
    **command_route(BillingRunCreate, {201: BillingRun}, summary="Invoice and charge as of a time"),
)
def create_billing_run(command: Command, body: JsonBody) -> Response:
    return command.run("billing_run.create", body)


@router.get(
    "/v1/billing_runs/{run_id}", **read_route(BillingRun, (404,), summary="Retrieve a billing run")
)
def get_billing_run(run_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(_queries(billkeep).billing_run(tenant_id, run_id))


@router.get(
    "/v1/invoices/{invoice_id}", **read_route(Invoice, (404,), summary="Retrieve an invoice")
)
def get_invoice(invoice_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(_queries(billkeep).invoice(tenant_id, invoice_id))


@router.get("/v1/invoices", **read_route(InvoiceList, summary="List invoices, newest first"))
def list_invoices(
    tenant_id: Tenant,
    billkeep: Engine,
    subscription_id: str | None = None,
    status: Annotated[INVOICE_STATUSES | None, Query()] = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    page = _queries(billkeep).invoices(tenant_id, subscription_id, status, limit, cursor)
    return json_response(page.as_dict())
