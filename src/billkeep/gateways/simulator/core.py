"""SimulatorCore: the gateway's behaviour without HTTP (store + injected clock + seeded ids).

The HTTP app is a thin translation onto these methods; a deterministic-simulation harness can call
them directly with a ManualClock and an in-memory or temporary-file store.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass

from billkeep.domain.clock import Clock, SystemClock
from billkeep.gateways.simulator import payments
from billkeep.gateways.simulator.cards import TestCard, find_card
from billkeep.gateways.simulator.errors import (
    JsonObject,
    idempotency_error,
    invalid_request,
    not_found,
)
from billkeep.gateways.simulator.fees import FeeSchedule
from billkeep.gateways.simulator.idempotency import fingerprint, validate_key
from billkeep.gateways.simulator.limits import (
    ASYNC_SETTLE_DEFAULT_MS,
    IDEMPOTENCY_RETENTION_MS,
)
from billkeep.gateways.simulator.objects import (
    balance_transaction_object,
    charge_object,
    customer_object,
    list_envelope,
    payment_intent_object,
    search_envelope,
)
from billkeep.gateways.simulator.params import (
    BulkCreate,
    CustomerCreate,
    DisputeCreate,
    ListRequest,
    PaymentIntentCreate,
    RefundCreate,
    RefundUpdate,
    SearchRequest,
)
from billkeep.gateways.simulator.result import SimResponse
from billkeep.gateways.simulator.search import parse_query
from billkeep.gateways.simulator.store import IdempotencyRecord, ListWindow, SimStore, Tx
from billkeep.gateways.simulator.writer import ObjectWriter

__all__ = ["BulkResult", "SimConfig", "SimulatorCore"]

_SETTLE_BATCH = 100
_COMMAND_METADATA_KEY = "billkeep_command"
_PAGE_PREFIX = "simpage_"


@dataclass(frozen=True, slots=True)
class SimConfig:
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    webhook_url: str | None = None
    # pm_card_async payments settle by themselves this long after confirmation; None: only via
    # settle_payment_intent (the `/_sim/payment_intents/{id}/settle` endpoint).
    async_settle_ms: int | None = ASYNC_SETTLE_DEFAULT_MS
    idempotency_retention_ms: int = IDEMPOTENCY_RETENTION_MS
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class BulkResult:
    created: int
    first_id: str | None
    last_id: str | None


class SimulatorCore:
    def __init__(
        self, store: SimStore, clock: Clock | None = None, config: SimConfig | None = None
    ):
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.config = config or SimConfig()
        self._id_salt = self._load_id_salt()

    def _load_id_salt(self) -> str:
        """Seeded runs make reproducible ids; unseeded stores get a random salt, kept per file."""
        if self.config.seed is not None:
            return f"seed:{self.config.seed}"
        with self.store.write() as tx:
            salt = tx.get_meta("id_salt")
            if salt is None:
                salt = secrets.token_hex(8)
                tx.set_meta("id_salt", salt)
            return salt

    def _writer(self, tx: Tx, idempotency_key: str | None = None) -> ObjectWriter:
        return ObjectWriter(
            tx,
            now_ms=self.clock.now_ms(),
            id_salt=self._id_salt,
            webhook_url=self.config.webhook_url,
            idempotency_key=idempotency_key,
        )

    # -- idempotent execution ----------------------------------------------------------------
    def _execute(
        self,
        operation: str,
        params: object,
        idempotency_key: str | None,
        effect: Callable[[ObjectWriter], SimResponse],
    ) -> SimResponse:
        """Run an effect once per key; the key row commits in the effect's own transaction.

        Parameter errors raised by the effect roll everything back and store nothing (as Stripe:
        only requests that started executing are saved); declines and successes are stored.
        Concurrent calls with one key serialise on the write lock and the later one replays; the
        HTTP layer turns that overlap into Stripe's 409 (see InFlightKeys) before calling here.
        """
        if idempotency_key is None:
            with self.store.write() as tx:
                return effect(self._writer(tx))
        key = validate_key(idempotency_key)
        fields = asdict(params) if is_dataclass(params) and not isinstance(params, type) else params
        digest = fingerprint(operation, fields)
        with self.store.write() as tx:
            now_ms = self.clock.now_ms()
            stored = tx.get_idempotency(key)
            if (
                stored is not None
                and stored.created_ms + self.config.idempotency_retention_ms <= now_ms
            ):
                tx.purge_idempotency(stored.created_ms + 1)  # expired: the key is free again
                stored = None
            if stored is not None:
                if stored.fingerprint != digest:
                    raise idempotency_error(
                        "Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{key}' if you "
                        "meant to execute a different request."
                    )
                return SimResponse(stored.status_code, stored.body, replayed=True)
            response = effect(self._writer(tx, key))
            tx.insert_idempotency(
                IdempotencyRecord(key, digest, now_ms, response.status_code, response.body)
            )
            return response

    def purge_expired_idempotency_keys(self) -> int:
        with self.store.write() as tx:
            return tx.purge_idempotency(self.clock.now_ms() - self.config.idempotency_retention_ms)

    # -- Stripe API: writes ------------------------------------------------------------------
    def create_customer(
        self, req: CustomerCreate, idempotency_key: str | None = None
    ) -> SimResponse:
        def effect(w: ObjectWriter) -> SimResponse:
            customer_id, seq = w.new_id("cus")
            customer = customer_object(
                customer_id,
                w.now_s,
                email=req.email,
                name=req.name,
                description=req.description,
                phone=req.phone,
                metadata=dict(req.metadata),
            )
            w.insert("customer", customer, seq)
            return SimResponse.ok(customer)

        return self._execute("POST /v1/customers", req, idempotency_key, effect)

    def create_payment_intent(
        self, req: PaymentIntentCreate, idempotency_key: str | None = None
    ) -> SimResponse:
        """Create (and with confirm=True, charge) a payment intent. A decline is a 402 response."""
        return self._execute(
            "POST /v1/payment_intents",
            req,
            idempotency_key,
            lambda w: payments.create_payment_intent(
                w, req, self.config.fees, self.config.async_settle_ms
            ),
        )

    def create_refund(self, req: RefundCreate, idempotency_key: str | None = None) -> SimResponse:
        return self._execute(
            "POST /v1/refunds",
            req,
            idempotency_key,
            lambda w: SimResponse.ok(payments.create_refund(w, req)),
        )

    def update_refund(
        self, refund_id: str, req: RefundUpdate, idempotency_key: str | None = None
    ) -> SimResponse:
        def effect(w: ObjectWriter) -> SimResponse:
            stored = w.tx.get_object("refund", refund_id)
            if stored is None:
                raise not_found("refund", refund_id)
            refund = stored.obj
            previous = {"metadata": dict(refund["metadata"])}
            refund["metadata"] = {**refund["metadata"], **req.metadata}
            w.save(refund)
            w.tx.replace_metadata(refund_id, refund["metadata"])
            w.emit("refund.updated", refund, previous)
            return SimResponse.ok(refund)

        return self._execute(f"POST /v1/refunds/{refund_id}", req, idempotency_key, effect)

    # -- Stripe API: reads -------------------------------------------------------------------
    def retrieve(self, kind: str, object_id: str) -> JsonObject:
        with self.store.read() as tx:
            stored = tx.get_object(kind, object_id)
        if stored is None:
            raise not_found(kind, object_id)
        return stored.obj

    def _window(self, tx: Tx, kind: str, req: ListRequest) -> ListWindow:
        def seq_of(object_id: str | None, param: str) -> int | None:
            if object_id is None:
                return None
            stored = tx.get_object(kind, object_id)
            if stored is None:
                raise invalid_request(
                    f"No such {kind}: '{object_id}'", code="resource_missing", param=param
                )
            return stored.seq

        return ListWindow(
            limit=req.limit,
            gte_s=req.created_gte_s,
            lt_s=req.created_lt_s,
            after_seq=seq_of(req.starting_after, "starting_after"),
            before_seq=seq_of(req.ending_before, "ending_before"),
        )

    def list(self, kind: str, req: ListRequest, url: str) -> JsonObject:
        """A Stripe list envelope, newest first (creation order, which ids also encode)."""
        with self.store.read() as tx:
            items, has_more = tx.list_objects(
                kind, self._window(tx, kind, req), filters=req.filters
            )
        return list_envelope([item.obj for item in items], has_more, url)

    def search_payment_intents(self, req: SearchRequest) -> JsonObject:
        query = parse_query(req.query)
        after_seq: int | None = None
        if req.page is not None:
            digits = req.page.removeprefix(_PAGE_PREFIX)
            if not req.page.startswith(_PAGE_PREFIX) or not digits.isdigit():
                raise invalid_request(f"Invalid page: {req.page}", param="page")
            after_seq = int(digits)
        window = ListWindow(limit=req.limit, after_seq=after_seq)
        with self.store.read() as tx:
            items, has_more = tx.list_objects(
                "payment_intent", window, filters=query.filters, metadata=query.metadata
            )
        next_page = f"{_PAGE_PREFIX}{items[-1].seq}" if has_more and items else None
        return search_envelope(
            [item.obj for item in items], has_more, next_page, "/v1/payment_intents/search"
        )

    # -- control API -------------------------------------------------------------------------
    def create_external_payment_intent(self, req: PaymentIntentCreate) -> SimResponse:
        """A payment made outside billkeep (dashboard, another system): same effects and events."""
        return self._execute(
            "sim external payment",
            req,
            None,
            lambda w: payments.create_payment_intent(
                w, req, self.config.fees, self.config.async_settle_ms
            ),
        )

    def settle_payment_intent(self, intent_id: str) -> JsonObject:
        with self.store.write() as tx:
            return payments.settle_payment_intent(self._writer(tx), intent_id, self.config.fees)

    def settle_due(self) -> int:
        """Settle every async payment whose automatic settlement time has come."""
        with self.store.read() as tx:
            due = tx.due_for_settlement(self.clock.now_ms(), _SETTLE_BATCH)
        settled = 0
        for intent_id in due:
            with self.store.write() as tx:
                stored = tx.get_object("payment_intent", intent_id)
                # Re-checked under the write lock: a manual settle may have won the race.
                if stored is None or stored.status != "processing":
                    continue
                payments.settle_payment_intent(self._writer(tx), intent_id, self.config.fees)
                settled += 1
        return settled

    def create_dispute(self, req: DisputeCreate) -> JsonObject:
        with self.store.write() as tx:
            return payments.create_dispute(self._writer(tx), req)

    def bulk_create_payment_intents(self, req: BulkCreate) -> BulkResult:
        """Write `count` succeeded payment intents (with charge and balance transaction) in one
        transaction, without events: a fixture for benchmarks and reconciliation at scale."""
        card = find_card("pm_card_visa")
        assert card is not None
        first_id: str | None = None
        last_id: str | None = None
        with self.store.write() as tx:
            w = self._writer(tx)
            start_s = w.now_s if req.created_start_s is None else req.created_start_s
            for index in range(req.count):
                created_s = start_s + index * req.spacing_s
                last_id = self._bulk_one(w, req, created_s, card)
                first_id = first_id or last_id
        return BulkResult(req.count, first_id, last_id)

    def _bulk_one(self, w: ObjectWriter, req: BulkCreate, created_s: int, visa: TestCard) -> str:
        intent_id, seq = w.new_id("pi")
        intent = payment_intent_object(
            intent_id,
            created_s,
            amount=req.amount,
            currency=req.currency,
            customer=None,
            payment_method=visa.payment_method,
            description=None,
            metadata=dict(req.metadata),
            status="succeeded",
        )
        charge_id, charge_seq = w.new_id("ch")
        txn_id, txn_seq = w.new_id("txn")
        charge = charge_object(
            charge_id,
            created_s,
            intent=intent,
            card=visa,
            status="succeeded",
            balance_transaction=txn_id,
        )
        txn = balance_transaction_object(
            txn_id,
            created_s,
            amount=req.amount,
            fee=self.config.fees.fee_for(req.amount),
            currency=req.currency,
            source=charge_id,
            type_="charge",
            description=None,
        )
        intent.update(latest_charge=charge_id, amount_received=req.amount)
        w.insert("payment_intent", intent, seq)
        w.insert("charge", charge, charge_seq, ref=intent_id)
        w.insert("balance_transaction", txn, txn_seq, ref=charge_id, type_="charge")
        return intent_id

    def state(self) -> JsonObject:
        """Totals a test asserts on: nothing paid twice per command, nothing over-refunded."""
        with self.store.read() as tx:
            by_status = tx.count_by("payment_intent", "status")
            refunds = tx.refunded_by_payment_intent()
            refund_count = sum(tx.count_by("refund", "status").values())
            deliveries = tx.delivery_counts()
            by_command = tx.succeeded_by_metadata("payment_intent", _COMMAND_METADATA_KEY)
        return {
            "payment_intents": {
                "total": sum(by_status.values()),
                "by_status": by_status,
                "succeeded_by_command": by_command,
            },
            "refunds": {"total": refund_count, "amount_by_payment_intent": refunds},
            "webhooks": {
                "pending": deliveries.get("pending", 0),
                "delivered": deliveries.get("delivered", 0),
                "failed": deliveries.get("failed", 0),
            },
        }
