"""POST /v1/webhooks/{gateway_id}: signatures made by the stripe package, on both databases."""

from __future__ import annotations

import json

import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient
from tests.integration.reconciliation.conftest import GATEWAY_ID, OLD_SECRET, SECRET, WebhookEnv
from tests.integration.reconciliation.support import (
    EventFactory,
    body_of,
    insert_charge,
    stripe_signature_header,
)

from billkeep.gateways.signing import sign_header
from billkeep.storage.tables.reconciliation import webhook_events
from billkeep.webhooks.limits import MAX_WEBHOOK_BODY_BYTES

URL = f"/v1/webhooks/{GATEWAY_ID}"


def _stored(env: WebhookEnv) -> int:
    with env.billkeep.db.read() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar_one()
        )


def _post(client: TestClient, body: bytes, header: str) -> tuple[int, dict[str, object]]:
    response = client.post(
        URL, content=body, headers={"Stripe-Signature": header, "Content-Type": "application/json"}
    )
    return response.status_code, response.json()


def _now_s(env: WebhookEnv) -> int:
    return env.clock.now_ms() // 1000


def test_valid_signature_is_stored_and_processed(env: WebhookEnv, client: TestClient) -> None:
    charge_id, command = insert_charge(
        env.billkeep.db,
        env.tenant_id,
        amount_minor=1500,
        gateway=GATEWAY_ID,
        now_ms=env.clock.now_ms(),
        reference="pi_valid",
    )
    body = body_of(EventFactory("pi_valid", 1500, command_ref=command).succeeded("evt_1"))
    header = stripe_signature_header(body, [SECRET], _now_s(env))
    # The header is exactly what Stripe's own verifier accepts.
    assert stripe.WebhookSignature.verify_header(body.decode(), header, SECRET)
    status, answer = _post(client, body, header)
    assert (status, answer) == (200, {"received": True, "duplicate": False})
    # The background task ran after the response (TestClient waits for it).
    assert env.billkeep.queries.charge(env.tenant_id, charge_id)["status"] == "succeeded"
    status, answer = _post(client, body, header)
    assert (status, answer) == (200, {"received": True, "duplicate": True})
    assert _stored(env) == 1


def test_wrong_secret_and_tampered_body_are_rejected_and_not_stored(
    env: WebhookEnv, client: TestClient
) -> None:
    body = body_of(EventFactory("pi_x", 100).succeeded("evt_bad"))
    header = stripe_signature_header(body, ["whsec_wrong"], _now_s(env))
    status, answer = _post(client, body, header)
    assert status == 400 and answer["code"] == "signature_invalid"
    good = stripe_signature_header(body, [SECRET], _now_s(env))
    tampered = body.replace(b'"amount": 100', b'"amount": 999')
    assert tampered != body
    status, answer = _post(client, tampered, good)
    assert status == 400 and answer["code"] == "signature_invalid"
    status, answer = _post(client, body, "")
    assert status == 400 and answer["code"] == "signature_invalid"
    assert _stored(env) == 0


def test_old_and_future_timestamps_are_rejected(env: WebhookEnv, client: TestClient) -> None:
    body = body_of(EventFactory("pi_t", 100).succeeded("evt_time"))
    for offset_s in (-301, 301, -86_400, 86_400):
        header = stripe_signature_header(body, [SECRET], _now_s(env) + offset_s)
        status, answer = _post(client, body, header)
        assert status == 400, offset_s
        assert answer["code"] == "timestamp_out_of_tolerance"
    assert _stored(env) == 0
    for offset_s in (-300, 300):  # the edges of the tolerance are inside it
        header = stripe_signature_header(body, [SECRET], _now_s(env) + offset_s)
        assert _post(client, body, header)[0] == 200


def test_rotated_secrets_and_several_v1_values(env: WebhookEnv, client: TestClient) -> None:
    factory = EventFactory("pi_rot", 100)
    # Signed with the previous secret only: still accepted while both are configured.
    body = body_of(factory.succeeded("evt_old_secret"))
    assert _post(client, body, stripe_signature_header(body, [OLD_SECRET], _now_s(env)))[0] == 200
    # Stripe rolling a secret sends one v1 per active secret; one unknown, one known.
    body = body_of(factory.succeeded("evt_two_v1"))
    header = stripe_signature_header(body, ["whsec_unknown", SECRET], _now_s(env))
    assert _post(client, body, header)[0] == 200
    assert _stored(env) == 2


def test_unknown_gateway_and_oversized_body(env: WebhookEnv, client: TestClient) -> None:
    body = body_of(EventFactory("pi_u", 100).succeeded("evt_u"))
    header = sign_header(body, [SECRET], _now_s(env))
    response = client.post(
        "/v1/webhooks/gw_nope", content=body, headers={"Stripe-Signature": header}
    )
    assert response.status_code == 404
    big = json.dumps({"id": "evt_big", "type": "x", "pad": "a" * MAX_WEBHOOK_BODY_BYTES}).encode()
    response = client.post(
        URL, content=big, headers={"Stripe-Signature": sign_header(big, [SECRET], _now_s(env))}
    )
    assert response.status_code == 413
    assert _stored(env) == 0


def test_events_api_lists_outcomes(env: WebhookEnv, client: TestClient) -> None:
    tenant_key = _api_key(env)
    factory = EventFactory("pi_unknown", 100)
    body = body_of(factory.succeeded("evt_parked"))
    assert _post(client, body, sign_header(body, [SECRET], _now_s(env)))[0] == 200
    auth = {"Authorization": f"Bearer {tenant_key}"}
    listed = client.get("/v1/webhook_events", params={"outcome": "parked"}, headers=auth).json()
    assert [e["event_id"] for e in listed["data"]] == ["evt_parked"]
    shown = client.get(f"/v1/webhook_events/{listed['data'][0]['id']}", headers=auth).json()
    assert shown["outcome"] == "parked" and shown["payload"]["id"] == "evt_parked"
    assert (
        client.get("/v1/webhook_events", params={"outcome": "nope"}, headers=auth).status_code
        == 422
    )


def _api_key(env: WebhookEnv) -> str:
    return env.billkeep.tenants.create_key(env.tenant_id, env.clock.now_ms())


def test_reconciliation_api_create_get_and_breaks(env: WebhookEnv, client: TestClient) -> None:
    from billkeep.domain.clock import ms_to_rfc3339
    from billkeep.reconciliation.matching import GatewayStatus
    from billkeep.reconciliation.operation import install
    from billkeep.reconciliation.runner import ReconciliationConfig
    from billkeep.reconciliation.sources import InMemorySource, SourcePayment

    now = env.clock.now_ms()
    foreign = SourcePayment("pi_outside", None, 700, "usd", GatewayStatus.SUCCEEDED, now, None)
    install(
        env.billkeep,
        lambda _t, _g: InMemorySource([foreign]),
        ReconciliationConfig(grace_period_ms=0),
    )
    auth = {"Authorization": f"Bearer {_api_key(env)}"}
    body = {"from": ms_to_rfc3339(now - 1000), "to": ms_to_rfc3339(now + 1000)}
    created = client.post(
        "/v1/reconciliations", json=body, headers={**auth, "Idempotency-Key": "rec-1"}
    )
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["object"] == "reconciliation" and run["summary"]["breaks"]["missing_in_ledger"] == 1
    assert client.get(f"/v1/reconciliations/{run['id']}", headers=auth).json() == run
    breaks = client.get(f"/v1/reconciliations/{run['id']}/breaks", headers=auth).json()["data"]
    assert [(b["type"], b["gateway_reference"], b["healed"]) for b in breaks] == [
        ("missing_in_ledger", "pi_outside", False)
    ]
    assert client.post("/v1/reconciliations", json=body, headers=auth).status_code == 400  # no key


def test_signed_bodies_that_are_not_storable_json_are_400(
    env: WebhookEnv, client: TestClient
) -> None:
    """A correctly signed body that is UTF-16 JSON or nested too deeply to parse is refused as
    webhook_payload_invalid with nothing stored (both used to escape as a 500)."""
    event = {"id": "evt_encoding", "type": "payment_intent.succeeded"}
    for body in (
        json.dumps(event).encode("utf-16"),
        b'{"id": "evt_deep", "type": "x", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ):
        status, answer = _post(client, body, sign_header(body, [SECRET], _now_s(env)))
        assert (status, answer["code"]) == (400, "webhook_payload_invalid"), answer
    assert _stored(env) == 0
