"""Stripe's error envelope: `{"error": {type, code, decline_code, message, param, payment_intent}}`."""

from __future__ import annotations

from typing import Any

__all__ = [
    "JsonObject",
    "StripeError",
    "api_error",
    "idempotency_error",
    "invalid_request",
    "not_found",
    "parameter_unknown",
]

JsonObject = dict[str, Any]


class StripeError(Exception):
    """An error the simulator answers with Stripe's envelope and HTTP status."""

    def __init__(
        self,
        status_code: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        payment_intent: JsonObject | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.payment_intent = payment_intent

    def envelope(self) -> JsonObject:
        error: JsonObject = {
            "type": self.type,
            "code": self.code,
            "decline_code": self.decline_code,
            "message": self.message,
            "param": self.param,
        }
        if self.payment_intent is not None:
            error["payment_intent"] = self.payment_intent
        return {"error": error}


def invalid_request(
    message: str, *, code: str | None = None, param: str | None = None
) -> StripeError:
    return StripeError(400, "invalid_request_error", message, code=code, param=param)


def parameter_unknown(param: str) -> StripeError:
    return invalid_request(
        f"Received unknown parameter: {param}", code="parameter_unknown", param=param
    )


def not_found(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def idempotency_error(message: str) -> StripeError:
    return StripeError(400, "idempotency_error", message)


def api_error(status_code: int, message: str) -> StripeError:
    return StripeError(status_code, "api_error", message)
