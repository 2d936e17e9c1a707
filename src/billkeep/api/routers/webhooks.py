"""`POST /v1/webhooks/{gateway_id}` (a gateway's signed event) and the inbox read models
`GET /v1/webhook_events[?gateway_id=&outcome=]`, `GET /v1/webhook_events/{id}` (additions to the
contract, see docs/reconciliation.md; replay is in the CLI: `billkeep events replay`).

The webhook POST takes no Idempotency-Key and no API key: the signature authenticates it, the
event id deduplicates it. It answers as soon as the event is stored; processing runs after the
response (a background task), and the worker retries whatever that did not finish.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request
from starlette.responses import Response

from billkeep.api.deps import Engine, Tenant, json_response
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


@router.post(
    "/v1/webhooks/{gateway_id}",
    summary="Receive a gateway's signed event",
    responses={
        200: {"description": "`{received: true, duplicate: bool}`"},
        400: {"description": "signature_invalid, timestamp_out_of_tolerance"},
    },
)
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


@router.get("/v1/webhook_events", summary="List inbox events, newest first")
def list_webhook_events(
    tenant_id: Tenant,
    billkeep: Engine,
    gateway_id: Annotated[str | None, Query()] = None,
    outcome: Annotated[str | None, Query()] = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    page = queries.list_events(
        billkeep.db, tenant_id, gateway_id=gateway_id, outcome=outcome, limit=limit, cursor=cursor
    )
    return json_response(page.as_dict())


@router.get("/v1/webhook_events/{event_row_id}", summary="Retrieve an inbox event")
def get_webhook_event(event_row_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(queries.get_event(billkeep.db, tenant_id, event_row_id))
