"""State lives in the SQLite file: a killed and restarted simulator still has everything."""

from __future__ import annotations

from typing import Any

PAYMENT = {
    "amount": "700",
    "currency": "usd",
    "payment_method": "pm_card_visa",
    "confirm": "true",
    "metadata[billkeep_command]": "cmd_restart",
}


def test_state_survives_kill_and_restart(sim: Any) -> None:
    client = sim.client()
    customer = client.v1.customers.create(params={"email": "r@example.com"})
    first = sim.post("/v1/payment_intents", PAYMENT, key="key-restart")
    assert first.status_code == 200
    refund = client.v1.refunds.create(params={"payment_intent": first.json()["id"], "amount": 200})
    before = sim.state()

    sim.restart(hard=True)  # SIGKILL: no graceful shutdown

    assert sim.state() == before
    client = sim.client()
    assert client.v1.customers.retrieve(customer.id).email == "r@example.com"
    assert client.v1.refunds.retrieve(refund.id).amount == 200
    replay = sim.post("/v1/payment_intents", PAYMENT, key="key-restart")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    # Same seed after restart, yet new ids never collide with the ones already issued.
    fresh = sim.post("/v1/payment_intents", PAYMENT)
    assert fresh.json()["id"] != first.json()["id"]
    assert sim.state()["payment_intents"]["succeeded_by_command"] == {"cmd_restart": 2}
