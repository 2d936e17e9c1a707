"""The webhook extension of the simulation: deliveries through the real inbox and processor under
network faults, an audit that passes on a stormy seed and fails on planted damage, and events of
payments billkeep did not make ending `ignored`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from billkeep.gateways.simulator.params import PaymentIntentCreate, RefundCreate
from billkeep.sim.extensions.webhook_audit import WebhookAudit
from billkeep.sim.extensions.webhooks import WebhookExtension
from billkeep.sim.runner import SimOptions, Simulation, _database, run_seed
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from billkeep.storage.tables.reconciliation import payment_states, webhook_events

# A seed whose deliveries are reordered, duplicated by the network, dropped and retried, and whose
# receiver crashes after storing an event before acknowledging it (found with a sweep of 0-79,
# with the webhook extension alone: other extensions' actions shift the action stream).
STORMY_SEED, STORMY_STEPS = 35, 40


def test_a_stormy_seed_delivers_through_every_fault_and_passes() -> None:
    result = run_seed(
        SimOptions(seed=STORMY_SEED, steps=STORMY_STEPS, extensions=frozenset({"webhooks"}))
    )
    assert result.ok, result.violations
    trace = "\n".join(result.trace)
    assert " delivers reordered " in trace
    assert re.search(r"webhook-\d+ failed before the receiver stored it", trace)
    assert result.stats["webhooks.duplicated"] >= 1  # at-least-once: sent again after a 2xx
    crashed = re.search(r"crash (webhook-\d+) at webhook:stored", trace)
    assert crashed, "no receiver crashed between storing and acknowledging"
    # The crashed attempt's event was stored but never acknowledged: the network sent it again
    # and the inbox answered duplicate (processed once, by the worker or an earlier attempt).
    delivered = re.search(rf"{crashed.group(1)} delivers (?:reordered )?(evt_\w+)", trace)
    assert delivered
    assert f"duplicate {delivered.group(1)}" in trace
    assert result.stats["webhooks.receive_duplicate"] >= 1
    assert result.stats["webhooks.outcome_applied"] >= 1  # some webhook taught billkeep first
    assert "webhooks.outcome_received" not in result.stats
    assert "webhooks.outcome_parked" not in result.stats


def test_events_of_payments_billkeep_did_not_make_end_ignored() -> None:
    """An external payment (no tenant, no command) and a refund of it: delivered to the account's
    first tenant, parked, looked up at the gateway, ignored; the audit passes."""
    options = SimOptions(seed=4, steps=8)
    with _database(None) as db:
        sim = Simulation(options, db)
        with sim.installed():
            sim.setup()
            violations, _step = sim.run_faulty_phase()
            assert violations == []
            external = sim.core.create_external_payment_intent(
                PaymentIntentCreate(
                    amount=1234, currency="usd", payment_method="pm_card_visa", confirm=True
                )
            ).body
            sim.core.create_refund(RefundCreate(payment_intent=external["id"], amount=100))
            sim.run_recovery()
            found = sim.auditor.check_final()
            for extension in sim.extensions:
                found += extension.check_final()
            assert found == []
            webhooks = next(e for e in sim.extensions if isinstance(e, WebhookExtension))
            assert webhooks.stats()["untenanted"] == 3  # the payment, its refund, the charge
        with db.read() as conn:
            rows = conn.execute(
                sa.select(
                    webhook_events.c.tenant_id,
                    webhook_events.c.event_type,
                    webhook_events.c.outcome,
                    webhook_events.c.payload,
                )
            ).all()
        about_external = [r for r in rows if external["id"] in r.payload]
        assert sorted((r.event_type, r.outcome) for r in about_external) == [
            ("charge.refunded", "ignored"),
            ("payment_intent.succeeded", "ignored"),
            ("refund.created", "ignored"),
        ]
        assert {r.tenant_id for r in about_external} == {sim.tenants[0]}


# --- the audit can fail --------------------------------------------------------------------------
@pytest.fixture
def audit_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    upgrade_to_head(db)
    return db


def _state_json(status: str, amount: int | None, refunds: list[list[object]]) -> str:
    return json.dumps(
        {
            "reference": "pi_1",
            "status": status,
            "amount_received_minor": amount,
            "failures": [],
            "refunds": refunds,
            "disputes": [],
        }
    )


def _write_state(db: Database, status: str, refunds: list[list[object]], *, insert: bool) -> None:
    values = {"status": status, "state": _state_json(status, 500, refunds), "updated_at_ms": 2}
    with db.write() as conn:
        if insert:
            conn.execute(
                payment_states.insert().values(
                    tenant_id="ten_a",
                    gateway_id="sim",
                    reference="pi_1",
                    charge_id="ch_1",
                    created_at_ms=1,
                    **values,
                )
            )
        else:
            conn.execute(payment_states.update().values(**values))


def _store_event(db: Database, event_id: str, event: dict[str, object], outcome: str) -> None:
    with db.write() as conn:
        conn.execute(
            webhook_events.insert().values(
                tenant_id="ten_a",
                id=f"wh_{event_id}",
                gateway_id="sim",
                event_id=event_id,
                event_type=event["type"],
                payload=json.dumps(event),
                reference="pi_1",
                outcome=outcome,
                reason=None,
                attempts=1,
                signed_at_ms=1,
                received_at_ms=1,
                next_attempt_at_ms=None,
                parked_at_ms=None,
                processed_at_ms=1,
            )
        )


def test_the_audit_catches_a_payment_state_moving_backward(audit_db: Database) -> None:
    audit = WebhookAudit(audit_db, "sim")
    _write_state(audit_db, "succeeded", [["re_1", 200, "succeeded"]], insert=True)
    assert audit.check_safety(set(), {}) == []
    _write_state(audit_db, "processing", [["re_1", 200, "succeeded"]], insert=False)
    found = audit.check_safety(set(), {})
    assert [v.invariant for v in found] == ["I8"]
    assert "moved back: succeeded -> processing" in found[0].detail
    # A refund reported lower than it was seen (succeeded -> failed) is a backward move too.
    _write_state(audit_db, "succeeded", [["re_1", 200, "failed"]], insert=False)
    found = audit.check_safety(set(), {})
    assert any("refund re_1" in v.detail and v.invariant == "I8" for v in found), found


def test_the_audit_catches_a_state_that_forgot_a_processed_event(audit_db: Database) -> None:
    audit = WebhookAudit(audit_db, "sim")
    _write_state(audit_db, "processing", [], insert=True)
    event = {
        "id": "evt_1",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_1", "object": "payment_intent", "status": "succeeded"}},
    }
    _store_event(audit_db, "evt_1", event, "duplicate")  # processed, yet the state lacks it
    found = audit.check_safety(set(), {"evt_1": "ten_a"})
    assert [v.invariant for v in found] == ["I8"]
    assert "a processed event reported succeeded" in found[0].detail


def test_the_audit_catches_an_acknowledged_event_not_stored(audit_db: Database) -> None:
    audit = WebhookAudit(audit_db, "sim")
    found = audit.check_safety({("ten_a", "evt_lost")}, {"evt_lost": "ten_a"})
    assert [(v.invariant, v.detail) for v in found] == [
        ("I11", "event evt_lost acknowledged to the gateway, not stored")
    ]
