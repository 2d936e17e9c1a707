"""Creating and changing objects inside one transaction: ids, persistence, events, outbox rows."""

from __future__ import annotations

from typing import Any

from billkeep.gateways.simulator.errors import JsonObject
from billkeep.gateways.simulator.ids import make_id
from billkeep.gateways.simulator.objects import event_object
from billkeep.gateways.simulator.store import StoredObject, Tx

__all__ = ["ObjectWriter"]


class ObjectWriter:
    """Bound to one transaction, so an effect, its events and their webhook outbox rows commit
    together or not at all (nothing is announced that did not happen, nothing happens unannounced).
    """

    def __init__(
        self,
        tx: Tx,
        *,
        now_ms: int,
        id_salt: str,
        webhook_url: str | None,
        idempotency_key: str | None = None,
    ) -> None:
        self.tx = tx
        self.now_ms = now_ms
        self.now_s = now_ms // 1000
        self._salt = id_salt
        self._webhook_url = webhook_url
        self._idempotency_key = idempotency_key

    def new_id(self, prefix: str) -> tuple[str, int]:
        seq = self.tx.next_seq()
        return make_id(prefix, seq, self._salt), seq

    def insert(
        self,
        kind: str,
        obj: JsonObject,
        seq: int,
        *,
        ref: str | None = None,
        type_: str | None = None,
        settle_at_ms: int | None = None,
    ) -> None:
        status = obj.get("status")
        self.tx.insert_object(
            StoredObject(
                id=obj["id"],
                kind=kind,
                seq=seq,
                created_s=int(obj["created"]),
                ref=ref,
                status=status if isinstance(status, str) else None,
                type=type_,
                settle_at_ms=settle_at_ms,
                obj=obj,
            )
        )

    def save(self, obj: JsonObject, *, settle_at_ms: int | None = None) -> None:
        status = obj.get("status")
        self.tx.update_object(
            obj["id"],
            obj,
            status=status if isinstance(status, str) else None,
            settle_at_ms=settle_at_ms,
        )

    def emit(
        self, type_: str, data_object: JsonObject, previous: dict[str, Any] | None = None
    ) -> JsonObject:
        event_id, seq = self.new_id("evt")
        event = event_object(
            event_id,
            self.now_s,
            type_=type_,
            data_object=data_object,
            previous_attributes=previous,
            idempotency_key=self._idempotency_key,
            pending_webhooks=1 if self._webhook_url else 0,
        )
        self.insert("event", event, seq, ref=data_object.get("id"), type_=type_)
        if self._webhook_url:
            self.tx.enqueue_delivery(event_id, self._webhook_url, self.now_ms)
        return event
