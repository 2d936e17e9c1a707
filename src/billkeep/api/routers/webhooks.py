"""`POST /v1/webhooks/{gateway_id}` (a gateway's signed event) and the inbox read models
`GET /v1/webhook_events[?gateway_id=&outcome=]`, `GET /v1/webhook_events/{id}` (additions to the
contract, see docs/reconciliation.md; replay is in the CLI: `billkeep events replay`).

The webhook POST takes no Idempotency-Key and no API key: the signature authenticates it, the
event id deduplicates it. It answers as soon as the event is stored; processing runs after the
response (a background task), and the worker retries whatever that did not finish.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request
from starlette.responses import Response

from billkeep.api.deps import Engine, Tenant, json_response
from billkeep.api.models_reconciliation import (
    EVENT_OUTCOMES,
    WebhookAck,
    WebhookEvent,
    WebhookEventList,
    WebhookEventPayload,
)
from billkeep.api.openapi import body_route, read_route
from billkeep.api.routers.customers import Cursor, Limit
from billkeep.domain.errors import BillkeepError, NotFound
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT
from billkeep.engine.service import Billkeep
from billkeep.gateways.signing import SignatureInvalid, TimestampOutOfTolerance
from billkeep.reconciliation.wiring import webhook_service_for
from billkeep.webhooks import queries
from billkeep.webhooks.inbox import Received, WebhookPayloadInvalid, WebhookTooLarge
from billkeep.webhooks.metrics import WEBHOOKS_RECEIVED, WEBHOOKS_REJECTED
from billkeep.webhooks.service import UnknownGateway, WebhookService

__all__ = ["get_webhook_service", "router"]

logger = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])
APP_STATE_KEY = "webhook_service"


class SignatureInvalidError(BillkeepError):
    code = "signature_invalid"
    status = 400
    title = "Webhook signature invalid"


class TimestampOutOfToleranceError(BillkeepError):
    code = "timestamp_out_of_tolerance"
    status = 400
    title = "Webhook timestamp out of tolerance"


class WebhookPayloadInvalidError(BillkeepError):
    code = "webhook_payload_invalid"
    status = 400
    title = "Webhook payload invalid"


class WebhookTooLargeError(BillkeepError):
    code = "request_too_large"
    status = 413
    title = "Webhook body too large"


def get_webhook_service(request: Request) -> WebhookService:
    """The app's WebhookService (`app.state.webhook_service`); built on first use from the
    gateway configuration store (secrets and lookups per configured gateway) when unset."""
    state = request.app.state
    service = getattr(state, APP_STATE_KEY, None)
    if service is None:
        billkeep = state.billkeep
        assert isinstance(billkeep, Billkeep)
        service = webhook_service_for(billkeep)
        setattr(state, APP_STATE_KEY, service)
    assert isinstance(service, WebhookService)
    return service


def _reject(reason: str, error: BillkeepError) -> BillkeepError:
    WEBHOOKS_REJECTED.labels(reason).inc()
    return error


def _receive_route() -> dict[str, Any]:
    # Authenticated by the gateway's signature, not an API key: no 401. The body is the gateway's
    # event, read as raw bytes (the signature covers them exactly).
    route = body_route(
        WebhookEventPayload,
        {200: WebhookAck},
        (400, 404, 413, 500, 503),
        summary="Receive a gateway's signed event",
    )
    descriptions = {
        400: "signature_invalid, timestamp_out_of_tolerance or webhook_payload_invalid: "
        "nothing stored",
        404: "No such gateway",
        413: "request_too_large: the event is over the webhook body limit",
    }
    for status, description in descriptions.items():
        route["responses"][status]["description"] = description
    return route


@router.post("/v1/webhooks/{gateway_id}", **_receive_route())
async def receive_webhook(
    gateway_id: str,
    request: Request,
    background: BackgroundTasks,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> Response:
    service = get_webhook_service(request)
    body = await request.body()
    try:
        received = service.receive(gateway_id, body, stripe_signature or "")
    except UnknownGateway:
        raise _reject("unknown_gateway", NotFound(f"no gateway {gateway_id}")) from None
    except SignatureInvalid as exc:
        raise _reject("signature_invalid", SignatureInvalidError(str(exc))) from None
    except TimestampOutOfTolerance as exc:
        raise _reject(
            "timestamp_out_of_tolerance", TimestampOutOfToleranceError(str(exc))
        ) from None
    except WebhookTooLarge as exc:
        raise _reject("too_large", WebhookTooLargeError(str(exc))) from None
    except WebhookPayloadInvalid as exc:
        raise _reject("payload_invalid", WebhookPayloadInvalidError(str(exc))) from None
    WEBHOOKS_RECEIVED.labels(str(received.duplicate).lower()).inc()
    if not received.duplicate:
        background.add_task(_process_quietly, service, received)
    return json_response({"received": True, "duplicate": received.duplicate})


def _process_quietly(service: WebhookService, received: Received) -> None:
    try:
        service.process_received(received)
    except Exception:  # stored and due: the worker retries it
        logger.exception("processing webhook event %s failed; left for the worker", received.id)


@router.get(
    "/v1/webhook_events", **read_route(WebhookEventList, summary="List inbox events, newest first")
)
def list_webhook_events(
    tenant_id: Tenant,
    billkeep: Engine,
    gateway_id: Annotated[str | None, Query()] = None,
    outcome: Annotated[EVENT_OUTCOMES | None, Query()] = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    page = queries.list_events(
        billkeep.db, tenant_id, gateway_id=gateway_id, outcome=outcome, limit=limit, cursor=cursor
    )
    return json_response(page.as_dict())


@router.get(
    "/v1/webhook_events/{event_row_id}",
    **read_route(WebhookEvent, (404,), summary="Retrieve an inbox event"),
)
def get_webhook_event(event_row_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(queries.get_event(billkeep.db, tenant_id, event_row_id))
