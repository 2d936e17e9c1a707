"""Where a simulated reconciliation reads the gateway: one tenant's objects of the shared store.

Every tenant of the simulation uses the one `SimulatorCore`, as if each had its own gateway
account. The account an object belongs to is its `metadata[billkeep_tenant]`: the adapter writes it
on everything billkeep makes, and the simulation's outside actors (dashboard refunds, payments
made outside billkeep) write it too, standing for "made in that tenant's gateway account". Balance
transactions (fees) carry no metadata: they belong to the account of the payment they book; a
refund or dispute belongs to the account of its payment intent.

The read is a network call: it takes latency, is a yield point (other actors run while the
listing is on the wire, so the ledger may move on after the gateway was read: a run works on a
snapshot, as a real one does), and may fail, either before anything arrives or at a later page,
after part of the window was staged. The failure raises `GatewayLookupFailed`; the command is
released and retried, and the resumed run starts its window over.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from billkeep.domain.clock import ManualClock
from billkeep.gateways.protocol import GatewayLookupFailed
from billkeep.gateways.simulator import SimulatorCore
from billkeep.reconciliation.sources import (
    SourceFee,
    SourcePayment,
    SourceReversal,
    fee_from_balance_transaction,
    payment_from_intent,
    reversal_from_dispute,
    reversal_from_refund,
)
from billkeep.sim.gateway import TENANT_METADATA_KEY

__all__ = ["SOURCE_PAGE_SIZE", "ReadFaults", "SimTenantSource", "SimTenantSourceFactory"]

# Small pages, so a window of a few dozen payments spans several of them and a read can fail
# after some were staged.
SOURCE_PAGE_SIZE = 4


@dataclass
class ReadFaults:
    """Seeded faults on the listing reads, while the simulation's faults are on."""

    rng: random.Random
    failure_probability: float
    max_latency_ms: int
    active: Callable[[], bool]  # off for recovery and the final runs
    log: list[str] = field(default_factory=list)

    def fails(self, what: str) -> bool:
        if not self.active() or self.rng.random() >= self.failure_probability:
            return False
        self.log.append(what)
        return True

    def latency_ms(self) -> int:
        if not self.active() or not self.max_latency_ms:
            return 0
        return self.rng.randint(0, self.max_latency_ms)


@dataclass(frozen=True)
class TenantObjects:
    """One tenant's account as read at one moment, each kind in creation order."""

    intents: list[Any]
    fees: list[Any]  # charge balance transactions
    refunds: list[Any]
    disputes: list[Any]


def tenant_objects(core: SimulatorCore, tenant_id: str) -> TenantObjects:
    """The tenant's payment intents, balance transactions, refunds and disputes."""
    with core.store.read() as tx:
        rows = tx.conn.execute(
            "SELECT kind, obj FROM objects WHERE kind IN"
            " ('payment_intent', 'charge', 'balance_transaction', 'refund', 'dispute')"
            " ORDER BY seq"
        ).fetchall()
    intents: list[Any] = []
    charge_owner: dict[str, str | None] = {}
    intent_owner: dict[str, str | None] = {}
    txns: list[Any] = []
    reversals: dict[str, list[Any]] = {"refund": [], "dispute": []}
    for kind, raw in rows:
        obj = json.loads(raw)
        if kind == "payment_intent":
            owner = (obj.get("metadata") or {}).get(TENANT_METADATA_KEY)
            intent_owner[obj["id"]] = owner
            if owner == tenant_id:
                intents.append(obj)
        elif kind == "charge":
            charge_owner[obj["id"]] = intent_owner.get(str(obj.get("payment_intent")))
        elif kind == "balance_transaction":
            txns.append(obj)
        elif intent_owner.get(str(obj.get("payment_intent"))) == tenant_id:
            reversals[kind].append(obj)  # a payment intent is stored before its refunds
    fees = [t for t in txns if charge_owner.get(str(t.get("source"))) == tenant_id]
    return TenantObjects(intents, fees, reversals["refund"], reversals["dispute"])


class SimTenantSource:
    """One tenant's account. Building it reads nothing (`reconciliation.create` builds one in its
    precheck, inside the recording transaction, to check the gateway exists); the listing is read
    when the run asks for the payments, in the run's own thread, between its transactions."""

    def __init__(self, factory: SimTenantSourceFactory, tenant_id: str) -> None:
        self._factory = factory
        self._tenant_id = tenant_id
        self._fees: list[SourceFee] = []
        self._reversals: list[SourceReversal] = []

    def payments(self, from_ms: int, to_ms: int) -> Iterator[list[SourcePayment]]:
        """Reads the listing now (on the wire), then hands out pages (one may fail)."""
        payments, self._fees, self._reversals, fail_at = self._factory.read(self._tenant_id)
        chosen = [p for p in payments if from_ms <= p.created_ms < to_ms]
        return _pages(chosen, fail_at)

    def fees(self, from_ms: int, to_ms: int) -> Iterator[list[SourceFee]]:
        # The fees of the account as read with the payments; the run joins them to the staged
        # payments by charge, so fees of payments outside the window are ignored there.
        return _pages(self._fees, None)

    def reversals(self, from_ms: int, to_ms: int) -> Iterator[list[SourceReversal]]:
        # The refunds and disputes as read with the payments (one snapshot of the account).
        chosen = [r for r in self._reversals if from_ms <= r.created_ms < to_ms]
        return _pages(chosen, None)


def _pages(items: list[Any], fail_at_page: int | None) -> Iterator[list[Any]]:
    for number, start in enumerate(range(0, len(items), SOURCE_PAGE_SIZE)):
        if number == fail_at_page:
            raise GatewayLookupFailed(f"sim: listing page {number} timed out")
        yield items[start : start + SOURCE_PAGE_SIZE]


class SimTenantSourceFactory:
    """`reconciliation.create`'s source factory for the simulation."""

    def __init__(
        self,
        core: SimulatorCore,
        clock: ManualClock,
        faults: ReadFaults,
        yield_point: Callable[[str], None],
    ) -> None:
        self._core = core
        self._clock = clock
        self._faults = faults
        self._yield = yield_point
        self.reads = 0

    def __call__(self, tenant_id: str, gateway_id: str) -> SimTenantSource:
        return SimTenantSource(self, tenant_id)

    def read(
        self, tenant_id: str
    ) -> tuple[list[SourcePayment], list[SourceFee], list[SourceReversal], int | None]:
        """The listing on the wire: latency, a yield point before and after, maybe a failure."""
        self._clock.advance(self._faults.latency_ms())
        self._yield("gateway:reconcile_list:request")
        self.reads += 1
        if self._faults.fails("reconcile_list:before_first_page"):
            raise GatewayLookupFailed("sim: listing timed out")
        found = tenant_objects(self._core, tenant_id)
        payments = [payment_from_intent(intent) for intent in found.intents]
        fees = [fee for fee in map(fee_from_balance_transaction, found.fees) if fee is not None]
        reversals = [reversal_from_refund(r) for r in found.refunds]
        reversals += [reversal_from_dispute(d) for d in found.disputes]
        fail_at: int | None = None
        pages = -(-len(payments) // SOURCE_PAGE_SIZE)
        if pages > 1 and self._faults.fails("reconcile_list:later_page"):
            fail_at = self._faults.rng.randint(1, pages - 1)
        self._yield("gateway:reconcile_list:answered")
        return payments, fees, reversals, fail_at
