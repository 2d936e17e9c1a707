"""Dependencies shared by every router: the engine, the authenticated tenant, the raw JSON body,
the Idempotency-Key and `Prefer: wait` headers, and the translation of a `CommandResult` into an
HTTP response.

Routers of other areas reuse these for their POSTs:

    @router.post("/v1/things", **command_route(Thing, ThingCreate))
    def create_thing(request: Request, command: Command, body: JsonBody) -> Response:
        return command.run("thing.create", body)

All idempotency semantics live in the engine (`Billkeep.execute`); this module only parses
headers and renders results.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from billkeep.api import metrics
from billkeep.api.context import request_log
from billkeep.api.errors import PROBLEM_MEDIA_TYPE, InvalidJson, Unauthenticated
from billkeep.domain.clock import ms_to_datetime
from billkeep.domain.errors import ValidationFailed
from billkeep.domain.fingerprint import validate_idempotency_key
from billkeep.engine.executor import CommandResult
from billkeep.engine.service import Billkeep

__all__ = [
    "Command",
    "CommandContext",
    "Engine",
    "IdemKey",
    "JsonBody",
    "Tenant",
    "WaitMs",
    "authenticated_tenant",
    "command_response",
    "get_billkeep",
    "http_date",
    "idempotency_key",
    "json_body",
    "json_response",
    "prefer_wait_ms",
]

JSON_MEDIA_TYPE = "application/json"
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")


def get_billkeep(request: Request) -> Billkeep:
    billkeep = request.app.state.billkeep
    assert isinstance(billkeep, Billkeep)
    return billkeep


Engine = Annotated[Billkeep, Depends(get_billkeep)]


def authenticated_tenant(
    request: Request,
    billkeep: Engine,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The tenant owning the bearer key, or 401 unauthenticated."""
    if credentials is None:
        raise Unauthenticated("send Authorization: Bearer <api key>")
    tenant_id = billkeep.tenants.authenticate(credentials.credentials)
    if tenant_id is None:
        raise Unauthenticated("the API key is unknown or revoked")
    request_log(request.scope)["tenant_id"] = tenant_id
    return tenant_id


Tenant = Annotated[str, Depends(authenticated_tenant)]


async def json_body(request: Request) -> dict[str, Any]:
    """The body as parsed JSON, untouched: the engine validates it strictly (no coercion here)."""
    raw = await request.body()
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationFailed.single("body", "must be a JSON object")
    return value


JsonBody = Annotated[dict[str, Any], Depends(json_body)]


def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="1..255 visible ASCII characters; scoped to (tenant, route).",
        ),
    ] = None,
) -> str:
    """The Idempotency-Key header: 400 idempotency_key_missing / idempotency_key_invalid."""
    return validate_idempotency_key(key)


IdemKey = Annotated[str, Depends(idempotency_key)]


def prefer_wait_ms(
    request: Request,
    prefer: Annotated[
        str | None,
        Header(
            alias="Prefer",
            description="`wait=N` (seconds, at most 10): wait for a concurrent first request.",
        ),
    ] = None,
) -> int:
    """RFC 7240 `Prefer: wait=N`, capped; an unparseable preference is ignored, as RFC 7240 says."""
    if prefer is None:
        return 0
    match = _PREFER_WAIT.search(prefer)
    if match is None:
        return 0
    cap_s = int(request.app.state.settings.max_prefer_wait_s)
    return min(int(match.group(1)), cap_s) * 1000


WaitMs = Annotated[int, Depends(prefer_wait_ms)]


def http_date(epoch_ms: int) -> str:
    """RFC 7231 IMF-fixdate, e.g. `Wed, 04 Mar 2026 10:00:00 GMT`."""
    return format_datetime(ms_to_datetime(epoch_ms), usegmt=True)


def _is_problem(status: int, body_text: str) -> bool:
    if status < 400:
        return False
    try:
        body = json.loads(body_text)
    except ValueError:
        return False
    kind = body.get("type") if isinstance(body, dict) else None
    return isinstance(kind, str) and kind.startswith("urn:billkeep:problem:")


def command_response(request: Request, operation: str, result: CommandResult) -> Response:
    """The engine's stored response, byte for byte, with the idempotency headers."""
    headers = {"Billkeep-Command-Id": result.command_id}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    if result.final and result.key_expires_at_ms is not None:
        headers["Idempotency-Key-Expires"] = http_date(result.key_expires_at_ms)
    if result.retry_after_ms is not None and result.status in (202, 409, 503):
        headers["Retry-After"] = str(max(1, -(-result.retry_after_ms // 1000)))
    request_log(request.scope)["command_id"] = result.command_id
    _observe_command(operation, result)
    media_type = PROBLEM_MEDIA_TYPE if _is_problem(result.status, result.body_text) else None
    return Response(
        content=result.body_text.encode("utf-8"),
        status_code=result.status,
        media_type=media_type or JSON_MEDIA_TYPE,
        headers=headers,
    )


def _observe_command(operation: str, result: CommandResult) -> None:
    metrics.COMMANDS.labels(operation, result.state.value, str(result.final).lower()).inc()
    if result.replayed:
        metrics.REPLAYS.labels(operation).inc()
    if operation == "charge.create" and result.status == 202:
        metrics.UNKNOWN_GATEWAY_OUTCOMES.inc()


def json_response(value: Any, status_code: int = 200) -> Response:
    """A read model as compact JSON."""
    return Response(
        content=json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        status_code=status_code,
        media_type=JSON_MEDIA_TYPE,
    )


@dataclass(frozen=True)
class CommandContext:
    """Everything a POST route needs to run one command: tenant, engine, key, wait."""

    request: Request
    billkeep: Billkeep
    tenant_id: str
    idempotency_key: str
    wait_ms: int

    def run(self, operation: str, body: dict[str, Any]) -> Response:
        result = self.billkeep.execute(
            self.tenant_id,
            operation,
            body,
            idempotency_key=self.idempotency_key,
            wait_ms=self.wait_ms,
        )
        return command_response(self.request, operation, result)


def command_context(
    request: Request, billkeep: Engine, tenant_id: Tenant, key: IdemKey, wait_ms: WaitMs
) -> CommandContext:
    return CommandContext(request, billkeep, tenant_id, key, wait_ms)


Command = Annotated[CommandContext, Depends(command_context)]
