"""The official stripe package against a real simulator process: objects, lists, search, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from tests.integration.gateways.conftest import API_KEY

from billkeep.reconciliation.money_out_records import ReversalKind, ReversalStatus
from billkeep.reconciliation.sources import StripeSource

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "stripe" / "fixtures-subset.json"


def _pay(client: stripe.StripeClient, payment_method: str, amount: int = 1000, **extra: Any) -> Any:
    return client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "payment_method": payment_method,
            "confirm": True,
            **extra,
        }
    )


def test_customer_create_and_retrieve_with_every_parameter(shared_sim: Any) -> None:
    sim = shared_sim
    client = sim.client()
    customer = client.v1.customers.create(
        params={
            "email": "ada@example.com",
            "name": "Ada",
            "description": "first",
            "phone": "+15555550100",
            "metadata": {"tenant": "t1"},
        }
    )
    assert isinstance(customer, stripe.Customer)
    assert customer.id.startswith("cus_")
    fetched = client.v1.customers.retrieve(customer.id)
    assert (fetched.email, fetched.name, fetched.description, fetched.phone) == (
        "ada@example.com",
        "Ada",
        "first",
        "+15555550100",
    )
    assert dict(fetched.metadata) == {"tenant": "t1"}
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_missing")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"


def test_visa_succeeds_with_every_parameter_parsed(shared_sim: Any) -> None:
    sim = shared_sim
    client = sim.client()
    customer = client.v1.customers.create(params={"email": "a@example.com"})
    intent = _pay(
        client,
        "pm_card_visa",
        2000,
        customer=customer.id,
        off_session=True,
        description="invoice 7",
        metadata={"billkeep_command": "cmd_1", "k": "v"},
    )
    assert isinstance(intent, stripe.PaymentIntent)
    assert (intent.status, intent.amount, intent.amount_received) == ("succeeded", 2000, 2000)
    assert (intent.customer, intent.description, intent.currency) == (
        customer.id,
        "invoice 7",
        "usd",
    )
    assert dict(intent.metadata) == {"billkeep_command": "cmd_1", "k": "v"}
    assert intent.livemode is False and intent.last_payment_error is None
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert isinstance(charge, stripe.Charge)
    assert (charge.status, charge.paid, charge.amount_captured) == ("succeeded", True, 2000)
    assert charge.payment_intent == intent.id
    assert client.v1.payment_intents.retrieve(intent.id).status == "succeeded"


@pytest.mark.parametrize(
    ("payment_method", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_declines_answer_402_with_the_payment_intent(
    shared_sim: Any, payment_method: str, decline_code: str
) -> None:
    sim = shared_sim
    client = sim.client()
    with pytest.raises(stripe.CardError) as declined:
        _pay(client, payment_method)
    error = declined.value
    assert error.http_status == 402 and error.code == "card_declined"
    assert error.error.type == "card_error" and error.error.decline_code == decline_code
    intent = error.error.payment_intent
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error.decline_code == decline_code
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.status, charge.paid, charge.failure_code) == ("failed", False, "card_declined")
    assert client.v1.payment_intents.retrieve(intent.id).status == "requires_payment_method"


def test_async_card_processes_then_settles(shared_sim: Any) -> None:
    sim = shared_sim
    client = sim.client()
    intent = _pay(client, "pm_card_async")
    assert intent.status == "processing"
    assert client.v1.charges.retrieve(intent.latest_charge).status == "pending"
    settled = sim.control("POST", f"/_sim/payment_intents/{intent.id}/settle")
    assert settled["status"] == "succeeded"
    assert client.v1.payment_intents.retrieve(intent.id).amount_received == 1000
    assert client.v1.charges.retrieve(intent.latest_charge).status == "succeeded"
    again = httpx.post(f"{sim.url}/_sim/payment_intents/{intent.id}/settle", timeout=5)
    assert again.status_code == 400  # settling twice is refused, not applied twice


def test_async_card_settles_automatically_after_the_configured_delay(sim_factory: Any) -> None:
    sim = sim_factory("--async-settle-ms", "200", "--poll-interval-ms", "20")
    intent = _pay(sim.client(), "pm_card_async")
    assert intent.status == "processing"
    for _ in range(100):
        if sim.client().v1.payment_intents.retrieve(intent.id).status == "succeeded":
            break
        time.sleep(0.05)
    assert sim.client().v1.payment_intents.retrieve(intent.id).status == "succeeded"


def test_refunds_partial_full_over_and_lists(shared_sim: Any) -> None:
    sim = shared_sim
    client = sim.client()
    intent = _pay(client, "pm_card_visa", 1000)
    first = client.v1.refunds.create(
        params={"payment_intent": intent.id, "amount": 400, "metadata": {"reason": "r1"}}
    )
    assert isinstance(first, stripe.Refund)
    assert (first.amount, first.status, first.payment_intent) == (400, "succeeded", intent.id)
    assert dict(first.metadata) == {"reason": "r1"}
    with pytest.raises(stripe.InvalidRequestError) as over:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 601})
    assert over.value.http_status == 400 and over.value.param == "amount"
    rest = client.v1.refunds.create(params={"payment_intent": intent.id})
    assert rest.amount == 600
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (1000, True)
    assert client.v1.refunds.retrieve(first.id).amount == 400
    listed = client.v1.refunds.list(params={"limit": 10, "payment_intent": intent.id})
    assert [r.id for r in listed.data] == [rest.id, first.id]
    assert sim.state()["refunds"]["amount_by_payment_intent"][intent.id] == 1000


def test_list_filters_and_pagination(sim: Any) -> None:
    client = sim.client()
    ids = [_pay(client, "pm_card_visa", 100 + i).id for i in range(5)]
    page = client.v1.payment_intents.list(params={"limit": 2})
    assert page.object == "list" and page.url == "/v1/payment_intents" and page.has_more
    assert [p.id for p in page.data] == ids[::-1][:2]
    following = client.v1.payment_intents.list(
        params={"limit": 2, "starting_after": page.data[-1].id}
    )
    assert [p.id for p in following.data] == ids[::-1][2:4]
    everything = [
        p.id for p in client.v1.payment_intents.list(params={"limit": 2}).auto_paging_iter()
    ]
    assert everything == ids[::-1]
    created = client.v1.payment_intents.retrieve(ids[0]).created
    assert len(client.v1.payment_intents.list(params={"created": {"gte": created}}).data) == 5
    assert client.v1.payment_intents.list(params={"created": {"lt": created}}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.list(params={"limit": 101})


def test_search_by_metadata_with_pages(shared_sim: Any) -> None:
    sim = shared_sim
    client = sim.client()
    wanted = [
        _pay(client, "pm_card_visa", metadata={"billkeep_command": "cmd_x"}).id for _ in range(3)
    ]
    _pay(client, "pm_card_visa", metadata={"billkeep_command": "cmd_other"})
    result = client.v1.payment_intents.search(
        params={"query": "metadata['billkeep_command']:'cmd_x'", "limit": 2}
    )
    assert result.object == "search_result" and result.has_more and result.next_page
    assert [p.id for p in result.data] == wanted[::-1][:2]
    rest = client.v1.payment_intents.search(
        params={
            "query": "metadata['billkeep_command']:'cmd_x'",
            "limit": 2,
            "page": result.next_page,
        }
    )
    assert [p.id for p in rest.data] == wanted[:1] and not rest.has_more and rest.next_page is None
    both = client.v1.payment_intents.search(
        params={"query": "metadata['billkeep_command']:'cmd_x' AND status:'succeeded'"}
    )
    assert len(both.data) == 3
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.search(params={"query": "amount>1"})


def test_balance_transactions_fees_and_events(sim_factory: Any) -> None:
    sim = sim_factory("--fee-percent", "2.9", "--fee-fixed", "30")
    client = sim.client()
    intent = _pay(client, "pm_card_visa", 1050)  # 2.9% of 1050 = 30.45 -> 30, + 30 fixed
    refund = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 50})
    txns = client.v1.balance_transactions.list().data
    by_type = {t.type: t for t in txns}
    assert (by_type["charge"].amount, by_type["charge"].fee, by_type["charge"].net) == (
        1050,
        60,
        990,
    )
    assert by_type["charge"].source == intent.latest_charge
    assert (by_type["refund"].amount, by_type["refund"].fee, by_type["refund"].net) == (-50, 0, -50)
    assert by_type["refund"].source == refund.id
    only_refunds = client.v1.balance_transactions.list(params={"type": "refund"}).data
    assert [t.id for t in only_refunds] == [by_type["refund"].id]
    events = client.v1.events.list().data
    assert [e.type for e in events] == [
        "charge.refunded",
        "refund.created",
        "payment_intent.succeeded",
    ]
    event = client.v1.events.retrieve(events[-1].id)
    assert isinstance(event, stripe.Event) and event.data.object.id == intent.id


def test_unknown_parameters_and_bad_auth_are_rejected(shared_sim: Any) -> None:
    sim = shared_sim
    client = sim.client()
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.payment_intents.create(
            params={"amount": 100, "currency": "usd", "capture_method": "manual"}
        )
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "capture_method")
    with pytest.raises(stripe.InvalidRequestError) as unknown_refund:
        client.v1.refunds.create(params={"payment_intent": "pi_x", "instructions_email": "x@y.z"})
    assert unknown_refund.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as unknown_list:
        client.v1.payment_intents.list(params={"expand": ["data.customer"]})
    assert unknown_list.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_intents.create(params={"currency": "usd"})
    assert (missing.value.code, missing.value.param) == ("parameter_missing", "amount")
    bad = stripe.StripeClient(
        "sk_live_nope", base_addresses={"api": sim.url}, max_network_retries=0
    )
    with pytest.raises(stripe.AuthenticationError):
        bad.v1.customers.create()
    anonymous = httpx.post(f"{sim.url}/v1/customers", timeout=5)
    assert (
        anonymous.status_code == 401
        and anonymous.json()["error"]["type"] == "invalid_request_error"
    )
    unrouted = sim.get("/v1/nothing_here")
    assert (
        unrouted.status_code == 404
        and "Unrecognized request URL" in unrouted.json()["error"]["message"]
    )


def _type_name(value: Any) -> str:
    return type(value).__name__


def _assert_same_shape(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    missing = set(theirs) - set(ours)
    assert not missing, f"{where}: fields missing {sorted(missing)}"
    for key, their_value in theirs.items():
        our_value = ours[key]
        if our_value is None or their_value is None:
            continue  # unset fields may be null, as Stripe's are
        assert _type_name(our_value) == _type_name(their_value), f"{where}.{key}"
        if isinstance(their_value, dict) and isinstance(our_value, dict) and key != "metadata":
            _assert_same_shape(our_value, their_value, f"{where}.{key}")


def test_objects_have_stripe_fixture_shapes(shared_sim: Any) -> None:
    sim = shared_sim
    fixtures = json.loads(FIXTURES.read_text())
    client = sim.client()
    customer = client.v1.customers.create()
    intent = _pay(client, "pm_card_visa", customer=customer.id)
    refund = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 10})
    dispute = sim.control("POST", "/_sim/disputes", {"payment_intent": intent.id})
    raw = {
        "customer": sim.get(f"/v1/customers/{customer.id}").json(),
        "payment_intent": sim.get(f"/v1/payment_intents/{intent.id}").json(),
        "charge": sim.get(f"/v1/charges/{intent.latest_charge}").json(),
        "refund": sim.get(f"/v1/refunds/{refund.id}").json(),
        "balance_transaction": sim.get("/v1/balance_transactions").json()["data"][0],
        "event": sim.get("/v1/events").json()["data"][0],
        "dispute": dispute,
    }
    for kind, ours in raw.items():
        theirs = fixtures[kind]
        if kind == "event":
            theirs = {k: v for k, v in theirs.items() if k != "data"}  # fixture data is a plan
            assert ours["type"] == "charge.dispute.created"
            assert ours["data"]["object"]["id"] == dispute["id"]
        _assert_same_shape(ours, theirs, kind)
        assert ours["object"] == kind


def test_disputes_list_by_creation_and_payment_and_retrieve(sim: Any) -> None:
    """Reconciliation lists disputes by creation window (StripeSource.reversals)."""
    client = sim.client()
    first, second, undisputed = (_pay(client, "pm_card_visa", 700 + i) for i in range(3))
    disputes = [
        sim.control("POST", "/_sim/disputes", {"payment_intent": intent.id})
        for intent in (first, second)
    ]
    listed = client.v1.disputes.list(params={"limit": 1})
    assert listed.object == "list" and listed.url == "/v1/disputes" and listed.has_more
    everything = client.v1.disputes.list(params={"limit": 1}).auto_paging_iter()
    assert [d.id for d in everything] == [disputes[1]["id"], disputes[0]["id"]]
    created = disputes[0]["created"]
    window = {"created": {"gte": created, "lt": created + 3600}}
    assert {d.id for d in client.v1.disputes.list(params=window).data} == {
        d["id"] for d in disputes
    }
    assert client.v1.disputes.list(params={"created": {"lt": created}}).data == []
    mine = client.v1.disputes.list(params={"payment_intent": first.id}).data
    assert [(d.id, d.amount, d.payment_intent) for d in mine] == [
        (disputes[0]["id"], 700, first.id)
    ]
    assert client.v1.disputes.list(params={"payment_intent": undisputed.id}).data == []
    fetched = client.v1.disputes.retrieve(disputes[1]["id"])
    assert isinstance(fetched, stripe.Dispute) and fetched.amount == 701


def test_stripe_source_reads_refunds_and_disputes_of_a_window(sim: Any) -> None:
    """The reconciliation's source, over HTTP with the official package."""
    client = sim.client()
    intent = _pay(client, "pm_card_visa", 900)
    refund = client.v1.refunds.create(
        params={"payment_intent": intent.id, "amount": 300, "metadata": {"billkeep_command": "c1"}}
    )
    dispute = sim.control("POST", "/_sim/disputes", {"payment_intent": intent.id})
    source = StripeSource(API_KEY, sim.url)
    created_ms = refund.created * 1000
    found = [r for page in source.reversals(created_ms, created_ms + 60_000) for r in page]
    by_kind = {r.kind: r for r in found if r.payment_reference == intent.id}
    assert by_kind[ReversalKind.REFUND].reference == refund.id
    assert by_kind[ReversalKind.REFUND].amount_minor == 300
    assert by_kind[ReversalKind.REFUND].command_ref == "c1"
    assert by_kind[ReversalKind.REFUND].status is ReversalStatus.SUCCEEDED
    assert by_kind[ReversalKind.DISPUTE].reference == dispute["id"]
    assert by_kind[ReversalKind.DISPUTE].amount_minor == 900  # the simulator disputes it all
    before = [r for page in source.reversals(0, created_ms - 1000) for r in page]
    assert intent.id not in {r.payment_reference for r in before}
