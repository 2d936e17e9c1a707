"""The outermost ASGI layer: request ids, the body size limit, last-resort 500s, metrics and logs.

It is a plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so it can count the streamed
body as it is received and add headers to every response, errors included.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billkeep.api import metrics
from billkeep.api.context import request_log
from billkeep.api.errors import BodyTooLarge, internal_error_response, problem_response
from billkeep.api.logs import access_logger
from billkeep.domain.ids import ulid
from billkeep.engine.problems import problem_from_error

__all__ = ["REQUEST_ID_HEADER", "ApiMiddleware"]

REQUEST_ID_HEADER = "Request-Id"
# A client-provided request id is kept only if it is short and made of safe characters, so it
# can go into logs and headers as is.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _request_id(scope: Scope) -> str:
    given = _header(scope, b"request-id") or _header(scope, b"x-request-id")
    if given is not None and _SANE_REQUEST_ID.match(given):
        return given
    return f"req_{ulid()}"


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else metrics.UNMATCHED_ROUTE


class ApiMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        log = request_log(scope)
        log["request_id"] = request_id = _request_id(scope)
        state: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            too_large = self._declared_too_large(scope)
            if too_large is not None:
                await too_large(scope, receive, send_with_headers)
            else:
                await self.app(scope, self._limited(receive), send_with_headers)
        except Exception:
            access_logger().exception("unhandled error", **log)
            if not state["started"]:
                await internal_error_response()(scope, receive, send_with_headers)
        finally:
            self._observe(scope, log, int(state["status"]), time.perf_counter() - started)

    def _declared_too_large(self, scope: Scope) -> Any:
        declared = _header(scope, b"content-length")
        if declared is None:
            return None
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length > self.max_body_bytes:
            return problem_response(problem_from_error(BodyTooLarge(self._limit_detail())))
        return None

    def _limit_detail(self) -> str:
        return f"request bodies are limited to {self.max_body_bytes} bytes"

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside the handler that reads the body: its error handler makes a 413.
                    raise BodyTooLarge(self._limit_detail())
            return message

        return limited_receive

    def _observe(self, scope: Scope, log: dict[str, Any], status: int, elapsed_s: float) -> None:
        method, route = scope.get("method", "?"), _route_template(scope)
        metrics.REQUESTS.labels(method, route, str(status)).inc()
        metrics.REQUEST_LATENCY.labels(method, route).observe(elapsed_s)
        access_logger().info(
            "request",
            method=method,
            path=scope.get("path"),
            route=route,
            status=status,
            duration_ms=round(elapsed_s * 1000, 3),
            **log,
        )
