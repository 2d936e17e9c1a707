"""Where a reconciliation reads the gateway's records: payment intents, their fees (balance
transactions), and the money that left them (refunds, disputes) created in a window, page by
page, never all at once.

`GatewaySource` is the protocol; `StripeSource` reads Stripe (or the simulator) through the
official `stripe` package against the gateway's api_base, `SimulatorStoreSource` reads a
simulator's store in-process (benchmarks, deterministic tests), `InMemorySource` serves unit tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import stripe

from billkeep.reconciliation.matching import GatewayStatus
from billkeep.reconciliation.money_out_records import ReversalKind, ReversalStatus

__all__ = [
    "COMMAND_METADATA_KEY",
    "PAGE_SIZE",
    "GatewaySource",
    "InMemorySource",
    "SimulatorStoreSource",
    "SourceFee",
    "SourcePayment",
    "SourceReversal",
    "StripeSource",
    "StripeSourceFactory",
    "fee_from_balance_transaction",
    "payment_from_intent",
    "reversal_from_dispute",
    "reversal_from_refund",
]

COMMAND_METADATA_KEY = "billkeep_command"
PAGE_SIZE = 100  # Stripe's maximum list page
_STATUS = {
    "succeeded": GatewayStatus.SUCCEEDED,
    "processing": GatewayStatus.PROCESSING,
    "requires_payment_method": GatewayStatus.REQUIRES_PAYMENT_METHOD,
    "canceled": GatewayStatus.CANCELED,
}


@dataclass(frozen=True, slots=True)
class SourcePayment:
    reference: str
    command_ref: str | None
    amount_minor: int
    currency: str
    status: GatewayStatus
    created_ms: int
    charge_reference: str | None
    amount_refunded_minor: int = 0


@dataclass(frozen=True, slots=True)
class SourceFee:
    balance_transaction: str
    charge_reference: str
    fee_minor: int


@dataclass(frozen=True, slots=True)
class SourceReversal:
    """A refund (`re_...`) or dispute (`dp_...`): money leaving a payment at the gateway."""

    kind: ReversalKind
    reference: str
    payment_reference: str | None
    command_ref: str | None  # metadata[billkeep_command] of a refund billkeep made
    amount_minor: int
    currency: str
    status: ReversalStatus
    created_ms: int


class GatewaySource(Protocol):
    def payments(self, from_ms: int, to_ms: int) -> Iterator[list[SourcePayment]]:
        """Pages of the payment intents created in [from_ms, to_ms)."""
        ...

    def fees(self, from_ms: int, to_ms: int) -> Iterator[list[SourceFee]]:
        """Pages of the charge balance transactions created in [from_ms, to_ms)."""
        ...

    def reversals(self, from_ms: int, to_ms: int) -> Iterator[list[SourceReversal]]:
        """Pages of the refunds, then the disputes, created in [from_ms, to_ms)."""
        ...


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def payment_from_intent(intent: Any) -> SourcePayment:
    metadata = _get(intent, "metadata") or {}
    command = _get(metadata, COMMAND_METADATA_KEY)
    raw_status = str(_get(intent, "status"))
    status = _STATUS.get(raw_status, GatewayStatus.PROCESSING)  # requires_action etc.: undecided
    if status is GatewayStatus.REQUIRES_PAYMENT_METHOD and _get(intent, "last_payment_error"):
        status = GatewayStatus.FAILED
    latest_charge = _get(intent, "latest_charge")
    if not isinstance(latest_charge, str):
        latest_charge = _get(latest_charge, "id")
    return SourcePayment(
        reference=str(_get(intent, "id")),
        command_ref=command if isinstance(command, str) and command else None,
        amount_minor=int(_get(intent, "amount")),
        currency=str(_get(intent, "currency")),
        status=status,
        created_ms=int(_get(intent, "created")) * 1000,
        charge_reference=latest_charge,
    )


def fee_from_balance_transaction(txn: Any) -> SourceFee | None:
    source = _get(txn, "source")
    if not isinstance(source, str):
        source = _get(source, "id")
    if _get(txn, "type") != "charge" or not isinstance(source, str):
        return None
    return SourceFee(str(_get(txn, "id")), source, int(_get(txn, "fee") or 0))


# Refund statuses: succeeded (gone), pending / requires_action (on its way), failed / canceled
# (never left). A dispute takes the money when it opens, whatever happens to it later: billkeep
# posts it then (payment_state.DisputeOpened), so every dispute counts as money out.
_REFUND_STATUS = {
    "succeeded": ReversalStatus.SUCCEEDED,
    "failed": ReversalStatus.FAILED,
    "canceled": ReversalStatus.FAILED,
}


def _reference(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    found = _get(value, "id")
    return found if isinstance(found, str) else None


def reversal_from_refund(refund: Any) -> SourceReversal:
    metadata = _get(refund, "metadata") or {}
    command = _get(metadata, COMMAND_METADATA_KEY)
    return SourceReversal(
        kind=ReversalKind.REFUND,
        reference=str(_get(refund, "id")),
        payment_reference=_reference(_get(refund, "payment_intent")),
        command_ref=command if isinstance(command, str) and command else None,
        amount_minor=int(_get(refund, "amount")),
        currency=str(_get(refund, "currency")),
        status=_REFUND_STATUS.get(str(_get(refund, "status")), ReversalStatus.PENDING),
        created_ms=int(_get(refund, "created")) * 1000,
    )


def reversal_from_dispute(dispute: Any) -> SourceReversal:
    return SourceReversal(
        kind=ReversalKind.DISPUTE,
        reference=str(_get(dispute, "id")),
        payment_reference=_reference(_get(dispute, "payment_intent")),
        command_ref=None,
        amount_minor=int(_get(dispute, "amount")),
        currency=str(_get(dispute, "currency")),
        status=ReversalStatus.SUCCEEDED,
        created_ms=int(_get(dispute, "created")) * 1000,
    )


def _pages(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    page: list[Any] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


class StripeSource:
    """Stripe's list endpoints with `created[gte]`/`created[lt]`, auto-paginated (100 per page)."""

    def __init__(self, api_key: str, api_base: str, *, timeout_s: float = 30.0) -> None:
        http_client = stripe.HTTPXClient(timeout=timeout_s, allow_sync_methods=True)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=http_client,
            max_network_retries=2,  # reads only: retrying a list page is always safe
        )

    def _window(self, from_ms: int, to_ms: int) -> dict[str, Any]:
        # Stripe filters by whole seconds: round outward, the window filter happens later.
        return {"created": {"gte": from_ms // 1000, "lt": -(-to_ms // 1000)}, "limit": PAGE_SIZE}

    def payments(self, from_ms: int, to_ms: int) -> Iterator[list[SourcePayment]]:
        listing = self._client.v1.payment_intents.list(params=self._window(from_ms, to_ms))  # type: ignore[arg-type]
        for page in _pages(listing.auto_paging_iter(), PAGE_SIZE):
            yield [payment_from_intent(intent) for intent in page]

    def fees(self, from_ms: int, to_ms: int) -> Iterator[list[SourceFee]]:
        listing = self._client.v1.balance_transactions.list(params=self._window(from_ms, to_ms))  # type: ignore[arg-type]
        for page in _pages(listing.auto_paging_iter(), PAGE_SIZE):
            fees = [fee_from_balance_transaction(txn) for txn in page]
            yield [fee for fee in fees if fee is not None]

    def reversals(self, from_ms: int, to_ms: int) -> Iterator[list[SourceReversal]]:
        window = self._window(from_ms, to_ms)
        refunds = self._client.v1.refunds.list(params=window)  # type: ignore[arg-type]
        for page in _pages(refunds.auto_paging_iter(), PAGE_SIZE):
            yield [reversal_from_refund(refund) for refund in page]
        disputes = self._client.v1.disputes.list(params=window)  # type: ignore[arg-type]
        for page in _pages(disputes.auto_paging_iter(), PAGE_SIZE):
            yield [reversal_from_dispute(dispute) for dispute in page]


class _CredentialsStore(Protocol):
    def credentials(self, tenant_id: str, gateway_id: str) -> Any: ...


class StripeSourceFactory:
    """Sources for configured gateways (billkeep.gateways.config's store)."""

    def __init__(self, store: _CredentialsStore) -> None:
        self._store = store

    def __call__(self, tenant_id: str, gateway_id: str) -> GatewaySource:
        credentials = self._store.credentials(tenant_id, gateway_id)
        return StripeSource(credentials.api_key, credentials.api_base)


class SimulatorStoreSource:
    """Reads a gateway simulator's store in-process, in large pages (no HTTP): for benchmarks.

    Pages walk the store's (kind, seq) index upward, so each page is an index range scan (the
    list endpoint's newest-first paging sorts the whole window on its first page), and only the
    fields the reconciliation reads are extracted, in SQLite, instead of decoding every object.
    The records are the ones `payment_from_intent` / `fee_from_balance_transaction` make from
    the full objects (tests/unit/reconciliation check both ways agree).
    """

    # id, status and created_s are the store's own columns (written from the object on every
    # insert and save); the rest is extracted from the JSON, the payment error only where the
    # status says there may be one.
    _PAYMENT_FIELDS = (
        "id, json_extract(obj, '$.metadata.billkeep_command'), "
        "json_extract(obj, '$.amount'), json_extract(obj, '$.currency'), status, "
        "CASE WHEN status = 'requires_payment_method' "
        "THEN json_extract(obj, '$.last_payment_error') END, "
        "created_s, json_extract(obj, '$.latest_charge')"
    )
    _FEE_FIELDS = "id, type, json_extract(obj, '$.source'), json_extract(obj, '$.fee')"
    _REVERSAL_FIELDS = (
        "id, json_extract(obj, '$.payment_intent'), json_extract(obj, '$.metadata'), "
        "json_extract(obj, '$.amount'), json_extract(obj, '$.currency'), status, created_s"
    )

    def __init__(self, core: Any, page_size: int = 5_000) -> None:
        self._core = core
        self._page_size = page_size

    def _rows(self, kind: str, fields: str, from_ms: int, to_ms: int) -> Iterator[list[Any]]:
        after_seq = 0
        sql = (
            f"SELECT seq, {fields} FROM objects INDEXED BY objects_kind_seq "
            "WHERE kind = ? AND seq > ? AND created_s >= ? AND created_s < ? "
            "ORDER BY seq LIMIT ?"
        )
        while True:
            with self._core.store.read() as tx:
                rows = tx.conn.execute(
                    sql, (kind, after_seq, from_ms // 1000, -(-to_ms // 1000), self._page_size)
                ).fetchall()
            if rows:
                yield rows
                after_seq = int(rows[-1][0])
            if len(rows) < self._page_size:
                return

    def payments(self, from_ms: int, to_ms: int) -> Iterator[list[SourcePayment]]:
        for rows in self._rows("payment_intent", self._PAYMENT_FIELDS, from_ms, to_ms):
            yield [payment_from_intent(_intent_fields(row)) for row in rows]

    def fees(self, from_ms: int, to_ms: int) -> Iterator[list[SourceFee]]:
        for rows in self._rows("balance_transaction", self._FEE_FIELDS, from_ms, to_ms):
            fees = [
                fee_from_balance_transaction(
                    {"id": row[1], "type": row[2], "source": _json_value(row[3]), "fee": row[4]}
                )
                for row in rows
            ]
            yield [fee for fee in fees if fee is not None]

    def reversals(self, from_ms: int, to_ms: int) -> Iterator[list[SourceReversal]]:
        for kind, make in (("refund", reversal_from_refund), ("dispute", reversal_from_dispute)):
            for rows in self._rows(kind, self._REVERSAL_FIELDS, from_ms, to_ms):
                yield [make(_reversal_fields(row)) for row in rows]


def _reversal_fields(row: Any) -> dict[str, Any]:
    _seq, reference, payment, metadata, amount, currency, status, created = row
    return {
        "id": reference,
        "payment_intent": _json_value(payment),
        "metadata": _json_value(metadata) or {},
        "amount": amount,
        "currency": currency,
        "status": status,
        "created": created,
    }


def _json_value(value: Any) -> Any:
    """json_extract returns objects and arrays as JSON text, scalars as themselves."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        return json.loads(value)
    return value


def _intent_fields(row: Any) -> dict[str, Any]:
    _seq, intent_id, command, amount, currency, status, error, created, latest_charge = row
    return {
        "id": intent_id,
        "metadata": {COMMAND_METADATA_KEY: command} if command is not None else {},
        "amount": amount,
        "currency": currency,
        "status": status,
        "last_payment_error": _json_value(error),
        "created": created,
        "latest_charge": _json_value(latest_charge),
    }


class InMemorySource:
    """A fixed set of gateway records (unit tests)."""

    def __init__(
        self,
        payments: Iterable[SourcePayment] = (),
        fees: Iterable[SourceFee] = (),
        page_size: int = 3,
        reversals: Iterable[SourceReversal] = (),
    ) -> None:
        self.payment_list = list(payments)
        self.fee_list = list(fees)
        self.reversal_list = list(reversals)
        self._page_size = page_size

    def payments(self, from_ms: int, to_ms: int) -> Iterator[list[SourcePayment]]:
        chosen = (p for p in self.payment_list if from_ms <= p.created_ms < to_ms)
        yield from _pages(chosen, self._page_size)

    def fees(self, from_ms: int, to_ms: int) -> Iterator[list[SourceFee]]:
        yield from _pages(self.fee_list, self._page_size)

    def reversals(self, from_ms: int, to_ms: int) -> Iterator[list[SourceReversal]]:
        chosen = (r for r in self.reversal_list if from_ms <= r.created_ms < to_ms)
        yield from _pages(chosen, self._page_size)


SourceFactory = Callable[[str, str], GatewaySource]
