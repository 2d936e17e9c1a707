"""Request plumbing shared by the Stripe routes and the control routes."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from billkeep.gateways.simulator.core import SimulatorCore
from billkeep.gateways.simulator.errors import StripeError, invalid_request
from billkeep.gateways.simulator.faults import FaultInjector
from billkeep.gateways.simulator.idempotency import InFlightKeys
from billkeep.gateways.simulator.limits import MAX_BODY_BYTES
from billkeep.gateways.simulator.objects import API_VERSION
from billkeep.gateways.simulator.result import SimResponse
from billkeep.gateways.simulator.webhooks import WebhookDispatcher

__all__ = ["SimContext", "error_response", "json_body", "read_body", "sim_response"]


@dataclass(frozen=True, slots=True)
class SimContext:
    core: SimulatorCore
    faults: FaultInjector
    dispatcher: WebhookDispatcher | None
    in_flight: InFlightKeys


async def read_body(request: Request) -> bytes:
    """The body, refused past MAX_BODY_BYTES whether or not Content-Length tells the truth."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise StripeError(
            413, "invalid_request_error", f"Request body exceeds {MAX_BODY_BYTES} bytes"
        )
    chunks: list[bytes] = []
    size_bytes = 0
    async for chunk in request.stream():
        size_bytes += len(chunk)
        if size_bytes > MAX_BODY_BYTES:
            raise StripeError(
                413, "invalid_request_error", f"Request body exceeds {MAX_BODY_BYTES} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid_request(f"Body is not valid JSON: {exc}") from exc


def sim_response(response: SimResponse, *, idempotency_key: str | None = None) -> JSONResponse:
    headers = {"Request-Id": f"req_{secrets.token_hex(7)}", "Stripe-Version": API_VERSION}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if response.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(response.body, status_code=response.status_code, headers=headers)


def error_response(error: StripeError) -> JSONResponse:
    return sim_response(SimResponse.from_error(error))
