"""Every error is an RFC 9457 problem document (`application/problem+json`).

Engine errors carry their code and status; FastAPI's own 404/405/422 and unexpected exceptions
are translated here too, so a client never sees another error shape.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from billkeep.api import metrics
from billkeep.api.context import request_log
from billkeep.domain.errors import (
    BillkeepError,
    DatabaseUnavailable,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
)
from billkeep.engine.executor import CommandIncomplete
from billkeep.engine.problems import problem, problem_from_error

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "BodyTooLarge",
    "InvalidJson",
    "Unauthenticated",
    "install_error_handlers",
    "internal_error_response",
    "problem_response",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"

_HTTP_CODES = {
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


class Unauthenticated(BillkeepError):
    code = "unauthenticated"
    status = 401
    title = "Missing or invalid API key"


class BodyTooLarge(BillkeepError):
    code = "request_too_large"
    status = 413
    title = "Request body too large"


class InvalidJson(BillkeepError):
    code = "invalid_json"
    status = 400
    title = "Request body is not valid JSON"


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def internal_error_response() -> Response:
    return problem_response(
        problem("internal_error", 500, "Internal error", "an unexpected error occurred")
    )


def _error_headers(request: Request, exc: BillkeepError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if isinstance(exc, IdempotencyKeyInUse):
        headers["Retry-After"] = str(max(1, exc.retry_after_s))
    elif isinstance(exc, DatabaseUnavailable):
        headers["Retry-After"] = str(request.app.state.settings.unavailable_retry_after_s)
    elif isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, CommandIncomplete):
        headers["Billkeep-Command-Id"] = exc.command_id
        request_log(request.scope)["command_id"] = exc.command_id
    return headers


async def _billkeep_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BillkeepError)
    if isinstance(exc, IdempotencyKeyInUse):
        metrics.IDEMPOTENCY_IN_USE.inc()
    elif isinstance(exc, IdempotencyKeyReused):
        metrics.IDEMPOTENCY_KEY_REUSED.inc()
    request_log(request.scope)["error_code"] = exc.code
    return problem_response(problem_from_error(exc), _error_headers(request, exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers or {})
    return problem_response(problem(code, exc.status_code, title, detail), headers)


def _field_name(location: tuple[Any, ...]) -> str:
    # FastAPI locations look like ("query", "limit") or ("header", "Prefer"): name the field.
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in location)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field_name(tuple(e.get("loc", ()))), "message": str(e.get("msg", "invalid"))}
        for e in exc.errors()
    ] or [{"field": "request", "message": "invalid"}]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem_response(
        problem("validation_error", 422, "Request validation failed", summary, errors)
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BillkeepError, _billkeep_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
