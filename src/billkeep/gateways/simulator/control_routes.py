"""The simulator's own control API under /_sim (JSON in, JSON out, no API key: localhost only)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billkeep.gateways.simulator.errors import JsonObject, StripeError, api_error, invalid_request
from billkeep.gateways.simulator.http_common import SimContext, error_response, json_body
from billkeep.gateways.simulator.params import (
    form_from_json,
    parse_bulk_create,
    parse_dispute_create,
    parse_payment_intent_create,
)

__all__ = ["control_routes"]

logger = logging.getLogger(__name__)

Handler = Callable[[SimContext, Any, dict[str, str]], JsonObject | tuple[int, JsonObject]]


def _endpoint(handler: Handler, *, reads_body: bool) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        context: SimContext = request.app.state.sim
        try:
            body = await json_body(request) if reads_body else None
            result = await run_in_threadpool(handler, context, body, dict(request.path_params))
        except StripeError as error:
            return error_response(error)
        except ValueError as exc:
            return error_response(invalid_request(str(exc)))
        except Exception:
            logger.exception("gateway simulator control request failed")
            return error_response(api_error(500, "Internal simulator error."))
        status_code, payload = result if isinstance(result, tuple) else (200, result)
        return JSONResponse(payload, status_code=status_code)

    return endpoint


def _set_faults(context: SimContext, body: Any, _: dict[str, str]) -> JsonObject:
    return context.faults.configure(body)


def _clear_faults(context: SimContext, _: Any, __: dict[str, str]) -> JsonObject:
    context.faults.clear()
    return {"deleted": True, **context.faults.describe()}


def _get_faults(context: SimContext, _: Any, __: dict[str, str]) -> JsonObject:
    return context.faults.describe()


def _external_payment(context: SimContext, body: Any, _: dict[str, str]) -> tuple[int, JsonObject]:
    form = form_from_json(body)
    # A payment made elsewhere: confirmed with a card that succeeds unless told otherwise.
    form.setdefault("payment_method", "pm_card_visa")
    form.setdefault("confirm", "true")
    response = context.core.create_external_payment_intent(parse_payment_intent_create(form))
    return response.status_code, response.body


def _settle(context: SimContext, _: Any, path: dict[str, str]) -> JsonObject:
    return context.core.settle_payment_intent(path["id"])


def _dispute(context: SimContext, body: Any, _: dict[str, str]) -> JsonObject:
    return context.core.create_dispute(parse_dispute_create(form_from_json(body)))


def _flush(context: SimContext, _: Any, __: dict[str, str]) -> JsonObject:
    attempted = 0 if context.dispatcher is None else context.dispatcher.flush()
    return {"attempted": attempted, "webhooks": context.core.state()["webhooks"]}


def _webhook_log(context: SimContext, _: Any, __: dict[str, str]) -> JsonObject:
    if context.dispatcher is None:
        return {"object": "list", "data": []}
    return context.dispatcher.log()


def _state(context: SimContext, _: Any, __: dict[str, str]) -> JsonObject:
    return context.core.state()


def _bulk(context: SimContext, body: Any, _: dict[str, str]) -> JsonObject:
    return asdict(context.core.bulk_create_payment_intents(parse_bulk_create(form_from_json(body))))


def control_routes() -> list[Route]:
    def route(path: str, method: str, handler: Handler, reads_body: bool = False) -> Route:
        return Route(path, _endpoint(handler, reads_body=reads_body), methods=[method])

    return [
        route("/_sim/faults", "POST", _set_faults, reads_body=True),
        route("/_sim/faults", "DELETE", _clear_faults),
        route("/_sim/faults", "GET", _get_faults),
        route("/_sim/payment_intents", "POST", _external_payment, reads_body=True),
        route("/_sim/payment_intents/{id}/settle", "POST", _settle),
        route("/_sim/disputes", "POST", _dispute, reads_body=True),
        route("/_sim/webhooks/flush", "POST", _flush),
        route("/_sim/webhooks", "GET", _webhook_log),
        route("/_sim/state", "GET", _state),
        route("/_sim/bulk_payment_intents", "POST", _bulk, reads_body=True),
    ]
