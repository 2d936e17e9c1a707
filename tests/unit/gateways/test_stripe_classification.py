"""StripeGateway without a network: each wire answer the stripe package can meet -> one Outcome."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import stripe

from billkeep.gateways.protocol import Outcome, PaymentRequest, RefundRequest
from billkeep.gateways.stripe import GatewayKeyMisuse, StripeGateway, classify_error

REQUEST = PaymentRequest("key-1", "cmd_1", 1_000, "usd", "pm_card_visa", description="d")


class CannedClient(stripe.HTTPClient):
    """Answers each request with the next canned (status, body) or raises the next exception."""

    name = "canned"

    def __init__(self, *answers: tuple[int, Any] | BaseException) -> None:
        super().__init__()
        self.answers = list(answers)
        self.sent: list[tuple[str, str, Mapping[str, str], str | None]] = []

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        self.sent.append((method, url, dict(headers or {}), post_data))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            try:
                raise answer
            except BaseException as exc:  # as the package's own clients do: wrap, keep the cause
                raise stripe.APIConnectionError("network", should_retry=True) from exc
        status, body = answer
        return json.dumps(body).encode(), status, {"request-id": "req_1"}

    def close(self) -> None:
        pass


def _gateway(*answers: tuple[int, Any] | BaseException) -> tuple[StripeGateway, CannedClient]:
    client = CannedClient(*answers)
    return StripeGateway("sk_test_x", api_base="http://gw.test", http_client=client), client


def _error(status: int, type_: str, code: str | None = None, **extra: Any) -> tuple[int, Any]:
    return status, {"error": {"type": type_, "code": code, "message": "m", **extra}}


INTENT = {
    "id": "pi_1", "object": "payment_intent", "amount": 1_000, "currency": "usd",
    "status": "succeeded", "metadata": {"billkeep_command": "cmd_1"}, "last_payment_error": None,
}  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ((200, INTENT), Outcome.SUCCEEDED),
        ((200, {**INTENT, "status": "processing"}), Outcome.PROCESSING),
        (
            _error(402, "card_error", "card_declined", decline_code="generic_decline"),
            Outcome.DECLINED,
        ),
        (_error(400, "invalid_request_error", "amount_too_large"), Outcome.DECLINED),
        (_error(404, "invalid_request_error", "resource_missing"), Outcome.DECLINED),
        (_error(429, "rate_limit_error", "rate_limit"), Outcome.NOT_EXECUTED),
        (_error(401, "invalid_request_error"), Outcome.NOT_EXECUTED),
        (_error(403, "invalid_request_error"), Outcome.NOT_EXECUTED),
        (_error(409, "invalid_request_error", "idempotency_key_in_use"), Outcome.UNKNOWN),
        (_error(500, "api_error"), Outcome.UNKNOWN),
        (_error(502, "api_error"), Outcome.UNKNOWN),
        (_error(503, "api_error"), Outcome.UNKNOWN),
        (httpx.ConnectError("refused"), Outcome.NOT_EXECUTED),
        (httpx.ConnectTimeout("no connect"), Outcome.NOT_EXECUTED),
        (httpx.PoolTimeout("no connection free"), Outcome.NOT_EXECUTED),
        (httpx.ReadTimeout("sent, no answer"), Outcome.UNKNOWN),
        (httpx.RemoteProtocolError("dropped after sending"), Outcome.UNKNOWN),
        (httpx.WriteTimeout("half sent"), Outcome.UNKNOWN),
    ],
)
def test_every_answer_is_classified(answer: Any, outcome: Outcome) -> None:
    gateway, _client = _gateway(answer)
    result = gateway.create_payment(REQUEST)
    assert result.outcome is outcome, result
    if outcome is Outcome.SUCCEEDED:
        assert (result.reference, result.amount_minor, result.command_ref) == (
            "pi_1",
            1_000,
            "cmd_1",
        )


def test_a_decline_carries_the_intent_and_the_specific_code() -> None:
    declined_intent = {
        **INTENT, "id": "pi_2", "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds",
                               "message": "Your card has insufficient funds."},
    }  # fmt: skip
    gateway, _ = _gateway(
        _error(402, "card_error", "card_declined", decline_code="insufficient_funds",
               payment_intent=declined_intent)
    )  # fmt: skip
    result = gateway.create_payment(REQUEST)
    assert (result.outcome, result.reference, result.failure_code) == (
        Outcome.DECLINED, "pi_2", "insufficient_funds",
    )  # fmt: skip


def test_key_reuse_with_other_parameters_is_a_bug_and_raises() -> None:
    gateway, _ = _gateway(_error(400, "idempotency_error"))
    with pytest.raises(GatewayKeyMisuse):
        gateway.create_payment(REQUEST)
    with pytest.raises(GatewayKeyMisuse):
        classify_error(stripe.IdempotencyError("reused"))


def test_a_bad_body_on_a_2xx_is_unknown_not_executed() -> None:
    assert (
        classify_error(stripe.APIError("Invalid response body", http_status=200)) is Outcome.UNKNOWN
    )


def test_the_payment_request_is_confirmed_off_session_keyed_and_tagged() -> None:
    gateway, client = _gateway((200, INTENT))
    gateway.create_payment(REQUEST)
    [(method, url, headers, body)] = client.sent
    assert (method, urlsplit(url).path) == ("post", "/v1/payment_intents")
    assert headers["Idempotency-Key"] == "key-1"
    assert dict(parse_qsl(body or "")) == {
        "amount": "1000", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true",
        "off_session": "true", "metadata[billkeep_command]": "cmd_1", "description": "d",
    }  # fmt: skip


def test_lookups_search_by_command_and_fall_back_to_listing() -> None:
    other = {**INTENT, "id": "pi_9", "metadata": {"billkeep_command": "cmd_other"}}
    gateway, client = _gateway(
        _error(400, "invalid_request_error", "search_unavailable"),
        (200, {"object": "list", "data": [INTENT, other], "has_more": False, "url": "/v1/payment_intents"}),
    )  # fmt: skip
    found = gateway.find_payments("cmd_1")
    assert [r.reference for r in found] == ["pi_1"]
    search_url = client.sent[0][1]
    assert urlsplit(search_url).path == "/v1/payment_intents/search"
    assert (
        dict(parse_qsl(urlsplit(search_url).query))["query"]
        == "metadata['billkeep_command']:'cmd_1'"
    )


def test_lookup_failures_raise_lookup_failed() -> None:
    from billkeep.gateways.protocol import GatewayLookupFailed

    gateway, _ = _gateway(httpx.ReadTimeout("slow"), _error(500, "api_error"))
    with pytest.raises(GatewayLookupFailed):
        gateway.find_payments("cmd_1")
    with pytest.raises(GatewayLookupFailed):
        gateway.retrieve_payment("pi_1")


def test_refunds_are_keyed_and_classified_the_same_way() -> None:
    refund = {"id": "re_1", "object": "refund", "amount": 500, "status": "succeeded"}
    gateway, client = _gateway((200, refund), _error(400, "invalid_request_error", "amount_too_large"),
                               httpx.ReadTimeout("lost"))  # fmt: skip
    request = RefundRequest("rkey", "cmd_r", "pi_1", 500, "usd")
    assert gateway.create_refund(request).outcome is Outcome.SUCCEEDED
    assert client.sent[0][2]["Idempotency-Key"] == "rkey"
    assert dict(parse_qsl(client.sent[0][3] or "")) == {
        "payment_intent": "pi_1", "amount": "500", "metadata[billkeep_command]": "cmd_r",
    }  # fmt: skip
    refused = gateway.create_refund(request)
    assert (refused.outcome, refused.failure_code) == (Outcome.DECLINED, "amount_too_large")
    assert gateway.create_refund(request).outcome is Outcome.UNKNOWN


def test_no_package_retries_and_stripe_retention() -> None:
    gateway, client = _gateway(_error(500, "api_error"))
    assert gateway.create_payment(REQUEST).outcome is Outcome.UNKNOWN
    assert len(client.sent) == 1  # the package did not retry on its own
    assert gateway.idempotency_retention_ms == 24 * 3600 * 1000
