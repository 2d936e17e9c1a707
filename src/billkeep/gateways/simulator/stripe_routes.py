"""The Stripe API subset: auth, form parsing, fault injection around each operation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billkeep.gateways.simulator.core import SimulatorCore
from billkeep.gateways.simulator.errors import StripeError, api_error
from billkeep.gateways.simulator.faults import FaultKind
from billkeep.gateways.simulator.forms import Form, ParamReader, parse_form
from billkeep.gateways.simulator.http_common import (
    SimContext,
    error_response,
    read_body,
    sim_response,
)
from billkeep.gateways.simulator.idempotency import KeyClaim, validate_key
from billkeep.gateways.simulator.params import (
    parse_customer_create,
    parse_list,
    parse_payment_intent_create,
    parse_refund_create,
    parse_refund_update,
    parse_search,
)
from billkeep.gateways.simulator.result import SimResponse

__all__ = ["Operation", "stripe_routes"]

# (core, form, path parameters, idempotency key) -> response; runs in a worker thread.
Operation = Callable[[SimulatorCore, Form, dict[str, str], str | None], SimResponse]

_TEST_KEY_PREFIX = "sk_test_"
logger = logging.getLogger(__name__)


def _authenticate(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise StripeError(
            401,
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
        )
    if scheme.lower() != "bearer" or not token.startswith(_TEST_KEY_PREFIX) or len(token) <= 8:
        shown = token[:8] + "*" * max(0, len(token) - 12) + token[-4:] if token else scheme
        raise StripeError(401, "invalid_request_error", f"Invalid API Key provided: {shown}")


async def _form(request: Request) -> Form:
    if request.method == "POST":
        return parse_form((await read_body(request)).decode("utf-8", errors="strict"))
    return parse_form(request.url.query)


async def _run(request: Request, operation: Operation) -> Response:
    context: SimContext = request.app.state.sim
    _authenticate(request)
    form = await _form(request)
    key = request.headers.get("idempotency-key") if request.method == "POST" else None
    if key is None:
        return await _apply_faults(request, context, operation, form, None)
    # The key is "in use" from arrival (injected latency included) until its effect commits.
    with context.in_flight.hold(validate_key(key)) as claim:
        return await _apply_faults(request, context, operation, form, claim)


async def _apply_faults(
    request: Request, context: SimContext, operation: Operation, form: Form, claim: KeyClaim | None
) -> Response:
    key = None if claim is None else claim.key
    decision = context.faults.decide(request.method, request.url.path)
    if decision.latency_ms:
        await asyncio.sleep(decision.latency_ms / 1000)  # never blocks other requests
    if decision.kind is FaultKind.ERROR_BEFORE_COMMIT:
        raise api_error(
            decision.status_code, "Injected fault: error before commit; nothing happened."
        )
    params = dict(request.path_params)
    try:
        response = await run_in_threadpool(operation, context.core, form, params, key)
    except StripeError as error:
        response = SimResponse.from_error(error)
    if decision.kind is FaultKind.ERROR_AFTER_COMMIT:
        raise api_error(decision.status_code, "Injected fault: error after commit.")
    if decision.kind is FaultKind.TIMEOUT_AFTER_COMMIT:
        # The effect is committed; the caller's timeout fires long before this answer leaves.
        # Its key is released first, so the caller's retry replays instead of getting a 409.
        if claim is not None:
            claim.release()
        await asyncio.sleep(decision.hold_ms / 1000)
    return sim_response(response, idempotency_key=key)


def _endpoint(operation: Operation) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        try:
            return await _run(request, operation)
        except StripeError as error:
            return error_response(error)
        except Exception:  # a simulator bug still answers in Stripe's envelope
            logger.exception("gateway simulator operation failed")
            return error_response(api_error(500, "Internal simulator error."))

    return endpoint


def _no_params(form: Form) -> None:
    ParamReader(form).reject_unknown()


def _retrieve(kind: str) -> Operation:
    def operation(
        core: SimulatorCore, form: Form, path: dict[str, str], _: str | None
    ) -> SimResponse:
        _no_params(form)
        return SimResponse.ok(core.retrieve(kind, path["id"]))

    return operation


def _list(kind: str, url: str, filters: dict[str, str] | None = None) -> Operation:
    def operation(
        core: SimulatorCore, form: Form, _: dict[str, str], __: str | None
    ) -> SimResponse:
        return SimResponse.ok(core.list(kind, parse_list(form, filters=filters), url))

    return operation


def _create_customer(
    core: SimulatorCore, form: Form, _: dict[str, str], key: str | None
) -> SimResponse:
    return core.create_customer(parse_customer_create(form), key)


def _create_payment_intent(
    core: SimulatorCore, form: Form, _: dict[str, str], key: str | None
) -> SimResponse:
    return core.create_payment_intent(parse_payment_intent_create(form), key)


def _search_payment_intents(
    core: SimulatorCore, form: Form, _: dict[str, str], __: str | None
) -> SimResponse:
    return SimResponse.ok(core.search_payment_intents(parse_search(form)))


def _create_refund(
    core: SimulatorCore, form: Form, _: dict[str, str], key: str | None
) -> SimResponse:
    return core.create_refund(parse_refund_create(form), key)


def _update_refund(
    core: SimulatorCore, form: Form, path: dict[str, str], key: str | None
) -> SimResponse:
    return core.update_refund(path["id"], parse_refund_update(form), key)


async def _unrecognized(request: Request) -> JSONResponse:
    return error_response(
        StripeError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({request.method}: {request.url.path}).",
        )
    )


def _route(path: str, method: str, operation: Operation) -> Route:
    return Route(path, _endpoint(operation), methods=[method])


def stripe_routes() -> list[Route]:
    # Order matters: /search must be tried before /{id}.
    return [
        _route("/v1/customers", "POST", _create_customer),
        _route("/v1/customers", "GET", _list("customer", "/v1/customers")),
        _route("/v1/customers/{id}", "GET", _retrieve("customer")),
        _route("/v1/payment_intents", "POST", _create_payment_intent),
        _route(
            "/v1/payment_intents",
            "GET",
            _list("payment_intent", "/v1/payment_intents", {"customer": "ref"}),
        ),
        _route("/v1/payment_intents/search", "GET", _search_payment_intents),
        _route("/v1/payment_intents/{id}", "GET", _retrieve("payment_intent")),
        _route("/v1/charges", "GET", _list("charge", "/v1/charges", {"payment_intent": "ref"})),
        _route("/v1/charges/{id}", "GET", _retrieve("charge")),
        _route("/v1/refunds", "POST", _create_refund),
        _route("/v1/refunds", "GET", _list("refund", "/v1/refunds", {"payment_intent": "ref"})),
        _route("/v1/refunds/{id}", "GET", _retrieve("refund")),
        _route("/v1/refunds/{id}", "POST", _update_refund),
        _route(
            "/v1/balance_transactions",
            "GET",
            _list(
                "balance_transaction",
                "/v1/balance_transactions",
                {"type": "type", "source": "ref"},
            ),
        ),
        _route("/v1/balance_transactions/{id}", "GET", _retrieve("balance_transaction")),
        _route("/v1/disputes", "GET", _list("dispute", "/v1/disputes", {"payment_intent": "ref"})),
        _route("/v1/disputes/{id}", "GET", _retrieve("dispute")),
        _route("/v1/events", "GET", _list("event", "/v1/events", {"type": "type"})),
        _route("/v1/events/{id}", "GET", _retrieve("event")),
        Route("/v1/{rest:path}", _unrecognized, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
    ]
