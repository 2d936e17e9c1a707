"""The engine over real HTTP to a simulator process, through StripeGateway: shared by test_stripe_*."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from billkeep.domain.clock import ManualClock
from billkeep.engine.executor import CommandResult
from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.engine.worker import RecoveryWorker
from billkeep.gateways.protocol import PaymentGateway, StaticGatewayDirectory
from billkeep.gateways.simulator_process import SimulatorProcess, run_simulator_process
from billkeep.gateways.stripe import StripeGateway, StripeTimeouts
from billkeep.storage.database import Database
from billkeep.storage.tables.core import charge_attempts, commands

__all__ = ["CLIENT_READ_TIMEOUT_MS", "Harness", "fault_rule", "make_harness"]

CLIENT_READ_TIMEOUT_MS = 400  # short, so timeouts cost little test time
HOLD_MS = 1_200  # timeout_after_commit withholds the answer longer than the client waits
MAX_RESOLVE_ROUNDS = 12


def fault_rule(kind: str, **extra: Any) -> dict[str, Any]:
    """One fault on the first payment intent create, then none."""
    rule: dict[str, Any] = {
        "match": {"method": "POST", "path": "/v1/payment_intents"},
        "fault": kind,
        "count": 1,
    }
    if kind == "timeout_after_commit":
        rule["hold_ms"] = HOLD_MS
    rule.update(extra)
    return rule


@dataclass
class Harness:
    sim: SimulatorProcess
    billkeep: Billkeep
    clock: ManualClock
    gateway: PaymentGateway
    tenant_id: str
    worker: RecoveryWorker
    resolve_rounds: list[int] = field(default_factory=list)

    def customer(self, payment_method: str, key: str = "cus-1") -> str:
        result = self.billkeep.create_customer(
            self.tenant_id, {"email": "c@example.com", "payment_method": payment_method}, key
        )
        assert result.status == 201, result.body_text
        return str(result.body()["id"])

    def charge(
        self, payment_method: str, key: str = "charge-1", amount: int = 2_500
    ) -> CommandResult:
        customer_id = self.customer(payment_method, key=f"cus-{key}")
        return self.billkeep.create_charge(
            self.tenant_id,
            {"customer_id": customer_id, "amount": amount, "currency": "usd"},
            key,
        )

    def command_row(self, command_id: str) -> Any:
        return self.billkeep.db.run_read(
            lambda conn: conn.execute(
                sa.select(commands).where(
                    commands.c.tenant_id == self.tenant_id, commands.c.id == command_id
                )
            ).one()
        )

    def attempts(self, charge_id: str) -> list[Any]:
        return list(
            self.billkeep.db.run_read(
                lambda conn: conn.execute(
                    sa.select(charge_attempts)
                    .where(
                        charge_attempts.c.tenant_id == self.tenant_id,
                        charge_attempts.c.charge_id == charge_id,
                    )
                    .order_by(charge_attempts.c.attempt_number)
                ).all()
            )
        )

    def charge_view(self, charge_id: str) -> dict[str, Any]:
        return self.billkeep.queries.charge(self.tenant_id, charge_id)

    def resolve(
        self,
        charge_id: str,
        command_id: str,
        on_pending: Callable[[dict[str, Any]], None] | None = None,
        real_gap_ms: int = 0,
    ) -> dict[str, Any]:
        """Let time pass to each scheduled retry and run the worker, until the charge is final.

        The engine's clock is manual and jumps (minutes, then days); the simulator's requests take
        real time. `real_gap_ms` of real time pass before each round, so a request the gateway is
        still executing (injected latency) finishes before the engine's clock says a day went by,
        as it always would in reality: the first retry comes a minute later.
        """
        for round_number in range(MAX_RESOLVE_ROUNDS):
            charge = self.charge_view(charge_id)
            if charge["status"] != "pending":
                self.resolve_rounds.append(round_number)
                return charge
            if on_pending is not None:
                on_pending(charge)
            row = self.command_row(command_id)
            assert row.next_attempt_at_ms is not None, "a pending charge has a scheduled retry"
            time.sleep(real_gap_ms / 1000)
            self.clock.set(max(self.clock.now_ms(), row.next_attempt_at_ms))
            self.worker.drain()
        raise AssertionError(f"charge {charge_id} still pending after {MAX_RESOLVE_ROUNDS} rounds")

    def assert_books(self, charge: dict[str, Any], command_id: str) -> None:
        """Exactly one payment at the gateway for a succeeded charge, none for a failed one, and
        the ledger saying the same thing."""
        state = self.sim.state()
        paid = state["payment_intents"]["succeeded_by_command"].get(command_id, 0)
        entries = self.billkeep.queries.journal_entries(
            self.tenant_id, resource_id=charge["id"], limit=100
        ).as_dict()["data"]
        keys = sorted(e["entry_key"] for e in entries)
        balance = self.billkeep.queries.trial_balance(
            self.tenant_id
        )  # asserts per-currency balance
        if charge["status"] == "succeeded":
            assert paid == 1, f"{command_id}: {paid} successful payments"
            reference = charge["gateway_reference"]
            assert keys == sorted([f"charge:{charge['id']}:sale", f"payment:{reference}:succeeded"])
            for entry in entries:
                assert entry["state"] == "posted"
                debits = sum(p["amount"] for p in entry["postings"] if p["direction"] == "debit")
                credits = sum(p["amount"] for p in entry["postings"] if p["direction"] == "credit")
                assert debits == credits == charge["amount"]
            usd = {c["currency"]: c for c in balance["currencies"]}["usd"]
            assert usd["debits"] == usd["credits"] == 2 * charge["amount"]
        else:
            assert charge["status"] == "failed"
            assert paid == 0, f"{command_id}: a failed charge was paid {paid} times"
            assert keys == []


def make_harness(
    sim: SimulatorProcess,
    url: str,
    clock: ManualClock,
    *,
    gateway: PaymentGateway | None = None,
    **config: Any,
) -> Harness:
    gateway = gateway or StripeGateway(
        sim.api_key,
        api_base=sim.url,
        timeouts=StripeTimeouts(read_ms=CLIENT_READ_TIMEOUT_MS),
    )
    billkeep = Billkeep(
        Database(url), StaticGatewayDirectory(gateway), clock=clock, config=EngineConfig(**config)
    )
    tenant_id, _key = billkeep.tenants.create_tenant("stripe tenant", clock.now_ms())
    return Harness(sim, billkeep, clock, gateway, tenant_id, RecoveryWorker(billkeep))


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    """One simulator for a module (commands are unique per test, so counts never mix)."""
    db = Path(tmp_path_factory.mktemp("sim")) / "sim.db"
    with run_simulator_process(db, seed=11, extra_args=["--async-settle-ms", "0"]) as sim:
        yield sim
