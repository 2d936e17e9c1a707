"""The demo's reconciliation act against a real simulator process: it finds the injected outside
payment, reports no break of billkeep's on a clean run, and does report one billkeep caused."""

from __future__ import annotations

from pathlib import Path

import pytest

import billkeep.demo.reconcile_act as act
from billkeep.demo.reconcile_act import run_reconcile_act
from billkeep.engine.service import Billkeep
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.gateways.simulator_process import run_simulator_process
from billkeep.gateways.stripe import StripeGateway
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from billkeep.storage.tables.core import charges


def _charge(bk: Billkeep, tenant_id: str, customer: str, key: str, amount: int) -> str:
    result = bk.create_charge(
        tenant_id, {"customer_id": customer, "amount": amount, "currency": "usd"}, key
    )
    assert result.status == 201, result.body_text
    return str(result.body()["id"])


def test_reconcile_act_finds_the_outside_payment_and_billkeeps_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with run_simulator_process(tmp_path / "sim.sqlite", seed=5) as sim:
        gateway = StripeGateway(sim.api_key, api_base=sim.url)
        bk = Billkeep(Database(f"sqlite:///{tmp_path / 'bk.db'}"), StaticGatewayDirectory(gateway))
        try:
            upgrade_to_head(bk.db)
            tenant_id, _ = bk.tenants.create_tenant("demo", bk.clock.now_ms())
            other_id, _ = bk.tenants.create_tenant("other demo tenant", bk.clock.now_ms())
            customer = bk.create_customer(
                tenant_id, {"email": "a@example.com", "payment_method": "pm_card_visa"}, "c1"
            ).body()["id"]
            other = bk.create_customer(
                other_id, {"email": "b@example.com", "payment_method": "pm_card_visa"}, "c2"
            ).body()["id"]
            first = _charge(bk, tenant_id, customer, "k1", 1_500)
            _charge(bk, tenant_id, customer, "k2", 2_500)
            _charge(bk, other_id, other, "k3", 3_500)  # another tenant's, same account

            clean = run_reconcile_act(bk, tenant_id, sim)
            assert clean.ok and clean.outside_found and not clean.attributable
            assert clean.run["summary"]["gateway_records"] == 3  # 2 ours + the outside one
            assert clean.breaks_by_type == {"missing_in_ledger": 3}
            assert clean.fee_heals == 2  # the simulator's fees, posted by the run

            # A break billkeep caused (its books disagree with the gateway) fails the act.
            with bk.db.write() as conn:
                conn.execute(
                    charges.update()
                    .where(charges.c.tenant_id == tenant_id, charges.c.id == first)
                    .values(amount_minor=1_499)
                )
            monkeypatch.setattr(act, "IDEMPOTENCY_KEY", "demo-reconcile-again")  # a new run
            broken = run_reconcile_act(bk, tenant_id, sim)
            assert not broken.ok and broken.outside_found
            by_type = {b["type"]: b for b in broken.attributable}
            assert sorted(by_type) == ["amount_mismatch", "missing_in_ledger"]
            assert by_type["amount_mismatch"]["resource_id"] == first
            # Only this run's injected payment is excused: the first run's now counts.
            assert by_type["missing_in_ledger"]["gateway_reference"] == clean.outside_reference
        finally:
            bk.close()
            gateway.close()
