"""Charges end to end through the engine, on both storage engines."""

from __future__ import annotations

from billkeep.domain.errors import IdempotencyKeyReused, ValidationFailed
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway, Fault


def test_first_charge_succeeds_and_replays_byte_identical(
    bk: Billkeep, tenant: str, customer_id: str
) -> None:
    request = {"customer_id": customer_id, "amount": 1000, "currency": "usd"}
    first = bk.create_charge(tenant, request, "k-1")
    again = bk.create_charge(tenant, dict(reversed(list(request.items()))), "k-1")
    assert (first.status, first.final, first.replayed) == (201, True, False)
    assert first.body()["status"] == "succeeded"
    assert again.replayed and again.body_text == first.body_text and again.status == 201


def test_same_key_other_request_is_refused(bk: Billkeep, tenant: str, customer_id: str) -> None:
    bk.create_charge(tenant, {"customer_id": customer_id, "amount": 1000, "currency": "usd"}, "k-2")
    try:
        bk.create_charge(
            tenant, {"customer_id": customer_id, "amount": 999, "currency": "usd"}, "k-2"
        )
    except IdempotencyKeyReused:
        pass
    else:
        raise AssertionError("a reused key with another body must be refused")


def test_invalid_request_records_nothing(bk: Billkeep, tenant: str, customer_id: str) -> None:
    for bad in (10.5, "100", True, -5, 10**16):
        try:
            bk.create_charge(
                tenant, {"customer_id": customer_id, "amount": bad, "currency": "usd"}, "k-bad"
            )
        except ValidationFailed as exc:
            assert exc.errors[0].field == "amount"
        else:
            raise AssertionError(f"amount {bad!r} must be rejected")
    # The key stayed unused: a valid request with it now runs normally.
    result = bk.create_charge(
        tenant, {"customer_id": customer_id, "amount": 5, "currency": "usd"}, "k-bad"
    )
    assert result.status == 201 and not result.replayed
    assert bk.queries.commands(tenant, operation="charge.create").data.__len__() == 1


def test_declined_card_is_final_402(bk: Billkeep, tenant: str, customer_id: str) -> None:
    result = bk.create_charge(
        tenant,
        {
            "customer_id": customer_id,
            "amount": 700,
            "currency": "usd",
            "payment_method": "pm_card_chargeDeclined",
        },
        "k-decl",
    )
    assert result.status == 402 and result.final
    assert result.body()["failure"]["code"] == "card_declined"
    assert bk.queries.trial_balance(tenant)["currencies"] == []


def test_unknown_outcome_is_resolved_by_asking_never_by_paying_twice(
    bk: Billkeep, tenant: str, customer_id: str, gateway: FakeGateway
) -> None:
    gateway.faults = lambda _op, _key: Fault.UNKNOWN_AFTER
    request = {"customer_id": customer_id, "amount": 1234, "currency": "eur"}
    pending = bk.create_charge(tenant, request, "k-unknown")
    assert (pending.status, pending.final) == (202, False)
    assert pending.body()["status"] == "pending"
    gateway.faults = lambda _op, _key: None
    settled = bk.create_charge(tenant, request, "k-unknown")
    assert (settled.status, settled.final) == (201, True)
    assert gateway.succeeded_by_command() == {settled.command_id: 1}
    balance = bk.queries.trial_balance(tenant)["currencies"]
    assert balance == [{"currency": "eur", "debits": 2468, "credits": 2468}]
