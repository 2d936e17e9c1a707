"""The OpenAPI 3.1 document: response and request schemas from the pydantic models.

Routes return the engine's bytes (replays must be byte-identical), so FastAPI cannot infer their
schemas; routes declare them with `command_route`/`read_route`, and `install_openapi` adds the
models to `components.schemas`, documents problem+json errors and the common headers, and
replaces FastAPI's default 422 schema with the problem document this API actually returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from billkeep.api.models import Problem

__all__ = ["body_route", "command_route", "install_openapi", "read_route", "schema_ref"]

_REF_TEMPLATE = "#/components/schemas/{model}"
_registered: dict[str, type[BaseModel]] = {}

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: the outcome is not known yet; retry with the same key or poll",
    400: "Bad request (malformed JSON, missing or malformed Idempotency-Key)",
    401: "Missing or invalid API key",
    402: "Payment failed",
    404: "Not found (or another tenant's)",
    409: "Conflict (key in use, business-rule refusal)",
    413: "Request body over the limit",
    422: "Validation failed, or the Idempotency-Key was used with another request",
    500: "Internal error",
    503: "Database or gateway unavailable; retry after Retry-After",
}
_COMMON_PROBLEMS = (401, 422, 500, 503)
_COMMAND_PROBLEMS = (400, 409, 413, *_COMMON_PROBLEMS)


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    _registered[model.__name__] = model
    return {"$ref": _REF_TEMPLATE.format(model=model.__name__)}


def _json(model: type[BaseModel], status: int) -> dict[str, Any]:
    return {
        "description": _STATUS_TEXT.get(status, str(status)),
        "content": {"application/json": {"schema": schema_ref(model)}},
    }


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _STATUS_TEXT.get(status, str(status)),
        "content": {"application/problem+json": {"schema": schema_ref(Problem)}},
    }


def _responses(ok: dict[int, type[BaseModel]], problems: Iterable[int]) -> dict[int | str, Any]:
    responses: dict[int | str, Any] = {status: _json(model, status) for status, model in ok.items()}
    for status in problems:
        responses.setdefault(status, _problem(status))
    return responses


def command_route(
    request_model: type[BaseModel],
    ok: dict[int, type[BaseModel]],
    extra_problems: Iterable[int] = (),
    *,
    summary: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `router.post(...)` for a POST that runs an engine command."""
    first_status = min(ok)
    return {
        "status_code": first_status,
        "response_model": None,
        "responses": _responses(ok, (*_COMMAND_PROBLEMS, *extra_problems)),
        "summary": summary,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schema_ref(request_model)}},
            },
            "x-billkeep-command": True,
        },
    }


def body_route(
    request_model: type[BaseModel],
    ok: dict[int, type[BaseModel]],
    problems: Iterable[int],
    *,
    summary: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `router.post(...)` for a POST with a JSON body that is not an engine
    command (no Idempotency-Key): every problem status it can answer is listed by the caller."""
    return {
        "status_code": min(ok),
        "response_model": None,
        "responses": _responses(ok, problems),
        "summary": summary,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schema_ref(request_model)}},
            }
        },
    }


def read_route(
    model: type[BaseModel], extra_problems: Iterable[int] = (), *, summary: str | None = None
) -> dict[str, Any]:
    """Keyword arguments of `router.get(...)` for a read model."""
    return {
        "response_model": None,
        "responses": _responses({200: model}, (*_COMMON_PROBLEMS, *extra_problems)),
        "summary": summary,
    }


_REQUEST_ID_HEADER = {
    "description": "The request's id (the client's if it sent a sane one).",
    "required": True,
    "schema": {"type": "string"},
}
_COMMAND_HEADERS = {
    "Billkeep-Command-Id": {
        "description": "The command this response belongs to.",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` on a replay of a stored final outcome.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Idempotency-Key-Expires": {
        "description": "RFC 7231 HTTP-date after which the key may start a new command.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying (202, 409, 503).",
        "schema": {"type": "string"},
    },
}


def _patch_operation(path: str, operation: dict[str, Any]) -> None:
    is_command = bool(operation.pop("x-billkeep-command", False))
    responses = operation.setdefault("responses", {})
    responses["422"] = _problem(422)
    # Any route may meet these, whoever wrote it: document them once, here.
    generic = (
        [500, 503] + ([404] if "{" in path else []) + ([401] if operation.get("security") else [])
    )
    for status in generic:
        responses.setdefault(str(status), _problem(status))
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        headers["Request-Id"] = _REQUEST_ID_HEADER
        if is_command and status != "401":
            headers.update(_COMMAND_HEADERS)
        content = response.get("content", {})
        if content.get("application/json", {}).get("schema") == {}:
            del content["application/json"]  # FastAPI's placeholder for untyped routes
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "header" and parameter.get("name") == "Idempotency-Key":
            parameter["required"] = True
            parameter["schema"] = {"type": "string", "pattern": "^[\\x21-\\x7E]{1,255}$"}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _, definitions = models_json_schema(
        [(model, "validation") for model in _registered.values()],
        ref_template=_REF_TEMPLATE,
    )
    schemas.update(definitions.get("$defs", {}))
    for path, path_item in document.get("paths", {}).items():
        for operation in path_item.values():
            _patch_operation(path, operation)
    return document


def install_openapi(app: FastAPI) -> None:
    cached: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        document = cached.get("document")
        if document is None:
            document = cached["document"] = build_openapi(app)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
