"""What an operation answers: an HTTP status and a Stripe JSON body (replays carry a flag)."""

from __future__ import annotations

from dataclasses import dataclass

from billkeep.gateways.simulator.errors import JsonObject, StripeError

__all__ = ["SimResponse"]


@dataclass(frozen=True, slots=True)
class SimResponse:
    status_code: int
    body: JsonObject
    replayed: bool = False

    @classmethod
    def ok(cls, body: JsonObject) -> SimResponse:
        return cls(200, body)

    @classmethod
    def from_error(cls, error: StripeError) -> SimResponse:
        return cls(error.status_code, error.envelope())
