"""Every request the stripe package sends for StripeGateway is one the simulator's strict parsers
accept: captured on the wire, then parsed by the simulator's own parameter readers (which refuse
unknown parameters), and answered without a 400 by the simulator process."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe
from tests.integration.gateways.stripe_harness import shared_sim

from billkeep.gateways.protocol import Outcome, PaymentRequest, RefundRequest
from billkeep.gateways.simulator.forms import parse_form
from billkeep.gateways.simulator.params import (
    parse_list,
    parse_payment_intent_create,
    parse_refund_create,
    parse_search,
)
from billkeep.gateways.simulator_process import SimulatorProcess
from billkeep.gateways.stripe import StripeGateway

__all__ = ["shared_sim"]


@dataclass
class Sent:
    method: str
    path: str
    form: str
    headers: dict[str, str]
    status: int


@dataclass
class RecordingClient(stripe.HTTPXClient):
    """The package's own httpx client, recording each request and its status."""

    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(timeout=5, allow_sync_methods=True)

    def request(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        body, status, response_headers = super().request(method, url, headers, post_data)
        parts = urlsplit(url)
        form = post_data if method.lower() == "post" else parts.query
        self.sent.append(Sent(method.upper(), parts.path, form or "", dict(headers), status))
        return body, status, response_headers


@pytest.fixture
def recorded(shared_sim: SimulatorProcess) -> Iterator[tuple[StripeGateway, RecordingClient]]:
    shared_sim.clear_faults()
    client = RecordingClient()
    yield StripeGateway(shared_sim.api_key, api_base=shared_sim.url, http_client=client), client
    client.close()


_PARSERS = {
    ("POST", "/v1/payment_intents"): parse_payment_intent_create,
    ("POST", "/v1/refunds"): parse_refund_create,
    ("GET", "/v1/payment_intents/search"): parse_search,
    ("GET", "/v1/payment_intents"): parse_list,
}


def test_every_request_parses_strictly_and_is_accepted(
    recorded: tuple[StripeGateway, RecordingClient],
) -> None:
    gateway, client = recorded
    paid = gateway.create_payment(
        PaymentRequest(
            "shape-pay-1",
            "cmd_shape",
            1_234,
            "usd",
            "pm_card_visa",
            None,
            "shape",
        )
    )
    assert paid.outcome is Outcome.SUCCEEDED and paid.reference is not None
    assert gateway.retrieve_payment(paid.reference).outcome is Outcome.SUCCEEDED
    assert [r.reference for r in gateway.find_payments("cmd_shape")] == [paid.reference]
    refund = gateway.create_refund(
        RefundRequest("shape-refund-1", "cmd_shape_r", paid.reference, 234, "usd")
    )
    assert refund.outcome is Outcome.SUCCEEDED and refund.amount_minor == 234
    assert len(client.sent) == 4
    for sent in client.sent:
        assert sent.status == 200, sent
        parser = _PARSERS.get((sent.method, sent.path))
        if parser is not None:
            parser(parse_form(sent.form))  # raises parameter_unknown on anything unexpected
        if sent.method == "POST":
            assert sent.headers.get("Idempotency-Key", "").startswith("shape-")
    payment = parse_payment_intent_create(parse_form(client.sent[0].form))
    assert (payment.confirm, payment.off_session) == (True, True)
    assert payment.metadata == {"billkeep_command": "cmd_shape"}


def test_the_list_fallback_parses_strictly(recorded: tuple[StripeGateway, RecordingClient]) -> None:
    gateway, client = recorded
    assert gateway._scan_intents("cmd_nothing") == []
    for sent in client.sent:
        assert (sent.method, sent.path, sent.status) == ("GET", "/v1/payment_intents", 200)
        parse_list(parse_form(sent.form), filters={"customer": "ref"})
