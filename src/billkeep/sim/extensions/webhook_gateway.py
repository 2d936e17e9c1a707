"""What the webhook extension reads of the simulated gateway's own store: the events it emitted
(by `seq`, incrementally), which tenant each concerns, and the final objects the audit compares
the engine's rows with. Reads go straight to `SimulatorCore`'s store, never through engine code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from billkeep.gateways.protocol import GatewayLookupFailed
from billkeep.gateways.simulator import SimulatorCore
from billkeep.gateways.simulator.errors import StripeError
from billkeep.gateways.simulator.store import Tx
from billkeep.sim.gateway import COMMAND_METADATA_KEY, TENANT_METADATA_KEY

__all__ = [
    "EmittedEvent",
    "GatewayTruth",
    "SimGatewayObjects",
    "read_new_events",
]


@dataclass(frozen=True)
class EmittedEvent:
    event_id: str
    event_type: str
    seq: int
    body: bytes  # the event exactly as the gateway would POST it
    tenant_id: str | None  # the tenant it concerns; None: no tenant anywhere on the object
    payment_intent: str | None  # the payment it is about, when it names one


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _payment_intent_of(obj: Mapping[str, Any]) -> str | None:
    if obj.get("object") == "payment_intent":
        return str(obj["id"])
    value = obj.get("payment_intent")
    return value if isinstance(value, str) else None


def _attribute(tx: Tx, obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(tenant, payment intent): the object's own tenant tag, else its payment intent's."""
    intent_id = _payment_intent_of(obj)
    tenant = _metadata(obj).get(TENANT_METADATA_KEY)
    if isinstance(tenant, str):
        return tenant, intent_id
    if intent_id is not None:
        stored = tx.get_object("payment_intent", intent_id)
        if stored is not None:
            tenant = _metadata(stored.obj).get(TENANT_METADATA_KEY)
            if isinstance(tenant, str):
                return tenant, intent_id
    return None, intent_id


def read_new_events(core: SimulatorCore, after_seq: int) -> list[EmittedEvent]:
    """Every event the gateway emitted after `after_seq`, in emission order."""
    with core.store.read() as tx:
        rows = tx.conn.execute(
            "SELECT seq, obj FROM objects WHERE kind = 'event' AND seq > ? ORDER BY seq",
            (after_seq,),
        ).fetchall()
        found: list[EmittedEvent] = []
        for seq, raw in rows:
            event = json.loads(raw)
            data = event.get("data") or {}
            obj = data.get("object") if isinstance(data, Mapping) else None
            tenant, intent_id = _attribute(tx, obj if isinstance(obj, Mapping) else {})
            found.append(
                EmittedEvent(
                    str(event["id"]),
                    str(event["type"]),
                    int(seq),
                    json.dumps(event, separators=(",", ":"), sort_keys=True).encode(),
                    tenant,
                    intent_id,
                )
            )
    return found


@dataclass(frozen=True)
class GatewayTruth:
    """The gateway's final objects, by id (payment intents, refunds, disputes)."""

    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, core: SimulatorCore) -> GatewayTruth:
        with core.store.read() as tx:
            rows = tx.conn.execute(
                "SELECT kind, obj FROM objects WHERE kind IN ('payment_intent', 'refund', "
                "'dispute') ORDER BY seq"
            ).fetchall()
        truth = cls()
        by_kind = {"payment_intent": truth.intents, "refund": truth.refunds}
        for kind, raw in rows:
            obj = json.loads(raw)
            by_kind.get(kind, truth.disputes)[str(obj["id"])] = obj
        return truth

    def is_billkeep_payment(self, intent_id: str | None) -> bool:
        intent = self.intents.get(intent_id or "")
        return intent is not None and COMMAND_METADATA_KEY in _metadata(intent)

    def refunds_of(self, intent_id: str) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self.refunds.values() if r.get("payment_intent") == intent_id),
            key=lambda r: str(r["id"]),
        )

    def disputes_of(self, intent_id: str) -> list[dict[str, Any]]:
        return sorted(
            (d for d in self.disputes.values() if d.get("payment_intent") == intent_id),
            key=lambda d: str(d["id"]),
        )


class SimGatewayObjects:
    """`webhooks.fetch.GatewayObjects` over the in-process gateway: what the processor asks about
    an event parked for long. All tenants share the simulated account, so every object is visible
    to each of them (as one Stripe account's objects are to its API key). Lookups fail as the
    network says (`fails()` is the extension's seeded draw)."""

    def __init__(
        self,
        core: SimulatorCore,
        fails: Callable[[], bool],
        yield_point: Callable[[str], None],
    ) -> None:
        self._core = core
        self._fails = fails
        self._yield = yield_point

    def _retrieve(self, kind: str, object_id: str) -> dict[str, Any] | None:
        # On the wire (the processor asks outside any transaction): other actors may run here.
        self._yield(f"gateway:webhook_lookup_{kind}:request")
        if self._fails():
            raise GatewayLookupFailed(f"sim: lookup of {object_id} timed out")
        try:
            return dict(self._core.retrieve(kind, object_id))
        except StripeError as exc:
            if exc.status_code == 404:
                return None
            raise GatewayLookupFailed(str(exc)) from exc

    def payment_intent(
        self, tenant_id: str, gateway_id: str, reference: str
    ) -> Mapping[str, Any] | None:
        return self._retrieve("payment_intent", reference)

    def charge_payment_intent(self, tenant_id: str, gateway_id: str, charge_id: str) -> str | None:
        charge = self._retrieve("charge", charge_id)
        intent = None if charge is None else charge.get("payment_intent")
        return intent if isinstance(intent, str) else None
