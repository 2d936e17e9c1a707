"""StripeGateway: the PaymentGateway protocol over Stripe's API, with the official `stripe` package.

The package's own network retries are OFF (`max_network_retries=0`): whether and when to repeat a
call is the engine's decision, because only the engine knows how old the idempotency key is. Every
call has a bounded timeout. Every PaymentIntent is created with `confirm=true`, `off_session=true`,
billkeep's deterministic idempotency key and `metadata[billkeep_command]`, so a payment can always
be found again by the command that made it, even after Stripe forgot the key (24 h).

How a failed call is classified (`classify_error`); the rule is "what do we KNOW happened":

| what the stripe package raised                          | Outcome        | why                                   |
|---------------------------------------------------------|----------------|---------------------------------------|
| `CardError` (402)                                       | DECLINED       | the bank refused; final               |
| `InvalidRequestError` (400/404, not idempotency)        | DECLINED       | validation failed, nothing executed;  |
|                                                         |                | the same parameters fail the same way |
|                                                         |                | on every retry, so it is final        |
| `IdempotencyError` (400 `idempotency_error`)            | raises         | billkeep reused a key with other      |
|                                                         |                | parameters: a programming error       |
| `RateLimitError` (429)                                  | NOT_EXECUTED   | refused before executing; retry       |
| `AuthenticationError` (401), `PermissionError` (403)    | NOT_EXECUTED   | refused before executing (a key to    |
|                                                         |                | fix); retry                           |
| `APIConnectionError` caused by a refused/failed connect | NOT_EXECUTED   | the request never reached Stripe      |
| (httpx `ConnectError`, `ConnectTimeout`, `PoolTimeout`) |                |                                       |
| `APIConnectionError`, any other cause (read timeout,    | UNKNOWN        | the request was (maybe) sent and no   |
| connection dropped after sending, protocol error)       |                | answer came: it may have executed     |
| `APIError` 5xx                                          | UNKNOWN        | Stripe: a 500 may or may not have     |
|                                                         |                | executed; no proof either way         |
| `APIError` 409 (`idempotency_key_in_use`, lock timeout) | UNKNOWN        | another request with this key may     |
|                                                         |                | still be executing                    |
| `APIError` other 4xx                                    | NOT_EXECUTED   | refused before executing              |
| any other `stripe.StripeError` (bad body on a 2xx, ...) | UNKNOWN        | no proof nothing happened             |

Lookups (`retrieve_payment`, `find_payments`) only read: any failure there is GatewayLookupFailed.
`find_payments` uses Stripe's search (`metadata['billkeep_command']:'<ref>'`), falling back to a
bounded scan of the list endpoint when search is unavailable. Stripe's search is eventually
consistent (up to about a minute behind), so "search found nothing" proves absence only for a
payment attempted well over a minute ago; the engine only looks up after the key's retention
(24 h minus a margin), far beyond that lag.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import stripe

from billkeep.gateways.protocol import (
    GatewayLookupFailed,
    Outcome,
    PaymentRequest,
    PaymentResult,
    RefundRequest,
    RefundResult,
)

__all__ = [
    "COMMAND_METADATA_KEY",
    "DEFAULT_API_BASE",
    "STRIPE_KEY_RETENTION_MS",
    "GatewayKeyMisuse",
    "StripeGateway",
    "StripeTimeouts",
    "classify_error",
    "payment_result_from_intent",
    "refund_result_from_refund",
]

DEFAULT_API_BASE = "https://api.stripe.com"
STRIPE_KEY_RETENTION_MS = 24 * 3600 * 1000  # Stripe keeps idempotency keys for at least 24 h
COMMAND_METADATA_KEY = "billkeep_command"
SEARCH_PAGE_LIMIT = 100
MAX_LOOKUP_PAGES = 20  # a command has a handful of payments; more pages than this is a loop
LIST_SCAN_PAGE_LIMIT = 100
MAX_LIST_SCAN_PAGES = 50  # the list fallback reads at most this many pages (newest first)

# Connection failures that prove the request never left this process.
_NOT_SENT_CAUSES: tuple[type[BaseException], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    ConnectionRefusedError,
)


class GatewayKeyMisuse(RuntimeError):
    """Stripe's `idempotency_error`: one key was sent with different parameters. A bug, never retried."""


@dataclass(frozen=True, slots=True)
class StripeTimeouts:
    """Bounded waits of one Stripe call (the package's default is 80 s, far too long for us)."""

    connect_ms: int = 3_000
    read_ms: int = 10_000
    write_ms: int = 10_000
    pool_ms: int = 3_000

    def as_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_ms / 1000,
            read=self.read_ms / 1000,
            write=self.write_ms / 1000,
            pool=self.pool_ms / 1000,
        )


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify_error(exc: stripe.StripeError) -> Outcome:
    """The Outcome a failed write call proves (see the module table); raises on key misuse."""
    if isinstance(exc, stripe.IdempotencyError):
        raise GatewayKeyMisuse(str(exc.user_message or exc)) from exc
    if isinstance(exc, stripe.CardError | stripe.InvalidRequestError):
        return Outcome.DECLINED
    if isinstance(exc, stripe.RateLimitError | stripe.AuthenticationError | stripe.PermissionError):
        return Outcome.NOT_EXECUTED
    if isinstance(exc, stripe.APIConnectionError):
        if any(isinstance(cause, _NOT_SENT_CAUSES) for cause in _cause_chain(exc)):
            return Outcome.NOT_EXECUTED
        return Outcome.UNKNOWN
    status = exc.http_status
    if isinstance(exc, stripe.APIError) and status is not None and 400 <= status < 500:
        return Outcome.UNKNOWN if status == 409 else Outcome.NOT_EXECUTED
    return Outcome.UNKNOWN


def _failure_code(error: Any) -> str | None:
    """Stripe's code, made specific by the decline code (`insufficient_funds`) when it says more."""
    if error is None:
        return None
    code = _get(error, "code")
    decline_code = _get(error, "decline_code")
    if code == "card_declined" and decline_code and decline_code != "generic_decline":
        return str(decline_code)
    return None if code is None else str(code)


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    try:
        return obj[key]
    except (KeyError, TypeError):
        return getattr(obj, key, None)


_INTENT_OUTCOMES = {
    "succeeded": Outcome.SUCCEEDED,
    "processing": Outcome.PROCESSING,
    "requires_payment_method": Outcome.DECLINED,  # a confirmed intent that failed
    "canceled": Outcome.DECLINED,
    # Off-session, nobody can authenticate: Stripe fails these, but be explicit.
    "requires_action": Outcome.DECLINED,
}


def payment_result_from_intent(intent: Any, detail: str | None = None) -> PaymentResult:
    """A PaymentIntent (object or dict) as a classified PaymentResult."""
    status = str(_get(intent, "status"))
    outcome = _INTENT_OUTCOMES.get(status, Outcome.PROCESSING)
    error = _get(intent, "last_payment_error")
    failure_code = _failure_code(error) if outcome is Outcome.DECLINED else None
    if outcome is Outcome.DECLINED and failure_code is None:
        failure_code = "authentication_required" if status == "requires_action" else status
    metadata = _get(intent, "metadata") or {}
    return PaymentResult(
        outcome=outcome,
        reference=_get(intent, "id"),
        amount_minor=_get(intent, "amount"),
        currency=_get(intent, "currency"),
        failure_code=failure_code,
        failure_message=_get(error, "message") if outcome is Outcome.DECLINED else None,
        command_ref=_get(metadata, COMMAND_METADATA_KEY),
        detail=detail or f"payment_intent status {status}",
    )


_REFUND_OUTCOMES = {
    "succeeded": Outcome.SUCCEEDED,
    "pending": Outcome.PROCESSING,
    "requires_action": Outcome.PROCESSING,
    "failed": Outcome.DECLINED,
    "canceled": Outcome.DECLINED,
}


def refund_result_from_refund(refund: Any) -> RefundResult:
    status = str(_get(refund, "status"))
    outcome = _REFUND_OUTCOMES.get(status, Outcome.PROCESSING)
    return RefundResult(
        outcome=outcome,
        reference=_get(refund, "id"),
        amount_minor=_get(refund, "amount"),
        failure_code=_get(refund, "failure_reason") if outcome is Outcome.DECLINED else None,
        detail=f"refund status {status}",
    )


def _describe(exc: stripe.StripeError) -> str:
    parts = [type(exc).__name__]
    if exc.http_status is not None:
        parts.append(str(exc.http_status))
    if exc.code:
        parts.append(str(exc.code))
    causes = [type(c).__name__ for c in _cause_chain(exc)]
    if causes:
        parts.append("cause " + "/".join(causes[:2]))
    return " ".join(parts)


class StripeGateway:
    """A PaymentGateway speaking Stripe's API (Stripe itself, or the gateway simulator)."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        name: str = "stripe",
        timeouts: StripeTimeouts | None = None,
        http_client: stripe.HTTPClient | None = None,
        retention_ms: int = STRIPE_KEY_RETENTION_MS,
    ) -> None:
        assert retention_ms > 0, "a gateway remembers keys for some positive time"
        self._name = name
        self._retention_ms = retention_ms
        self.api_base = api_base.rstrip("/")
        self.timeouts = timeouts or StripeTimeouts()
        self._http_client = http_client or stripe.HTTPXClient(
            timeout=self.timeouts.as_httpx(), allow_sync_methods=True
        )
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": self.api_base},
            max_network_retries=0,  # billkeep decides when to repeat a call, never the package
            http_client=self._http_client,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def idempotency_retention_ms(self) -> int:
        return self._retention_ms

    # --- payments ----------------------------------------------------------------------------
    def create_payment(self, request: PaymentRequest) -> PaymentResult:
        params: dict[str, Any] = {
            "amount": request.amount_minor,
            "currency": request.currency,
            "payment_method": request.payment_method,
            "confirm": True,
            "off_session": True,
            "metadata": {COMMAND_METADATA_KEY: request.command_ref},
        }
        if request.customer_ref is not None:
            params["customer"] = request.customer_ref
        if request.description is not None:
            params["description"] = request.description
        try:
            intent = self._client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as exc:
            return self._payment_failure(exc, request)
        return payment_result_from_intent(intent)

    def _payment_failure(self, exc: stripe.StripeError, request: PaymentRequest) -> PaymentResult:
        outcome = classify_error(exc)
        detail = _describe(exc)
        error = getattr(exc, "error", None)
        intent = _get(error, "payment_intent")
        if isinstance(exc, stripe.CardError) and intent is not None:
            declined = payment_result_from_intent(intent, detail)
            if declined.outcome is Outcome.DECLINED:
                return PaymentResult(
                    Outcome.DECLINED,
                    declined.reference,
                    declined.amount_minor,
                    declined.currency,
                    _failure_code(error) or declined.failure_code,
                    exc.user_message or declined.failure_message,
                    request.command_ref,
                    detail,
                )
            return declined
        if outcome is Outcome.DECLINED:
            return PaymentResult(
                Outcome.DECLINED,
                failure_code=_failure_code(error) or "invalid_request",
                failure_message=exc.user_message or str(exc),
                command_ref=request.command_ref,
                detail=detail,
            )
        return PaymentResult(outcome, command_ref=request.command_ref, detail=detail)

    def retrieve_payment(self, reference: str) -> PaymentResult:
        try:
            intent = self._client.v1.payment_intents.retrieve(reference)
        except stripe.StripeError as exc:
            raise GatewayLookupFailed(f"retrieve {reference}: {_describe(exc)}") from exc
        return payment_result_from_intent(intent)

    def find_payments(self, command_ref: str) -> list[PaymentResult]:
        try:
            intents = self._search_intents(command_ref)
        except stripe.InvalidRequestError:
            # Search is not available everywhere (e.g. some regions, older gateways): scan lists.
            try:
                intents = self._scan_intents(command_ref)
            except stripe.StripeError as exc:
                raise GatewayLookupFailed(f"list payments: {_describe(exc)}") from exc
        except stripe.StripeError as exc:
            raise GatewayLookupFailed(f"search payments: {_describe(exc)}") from exc
        return [payment_result_from_intent(intent, "found by command") for intent in intents]

    def _search_intents(self, command_ref: str) -> list[Any]:
        escaped = command_ref.replace("\\", "\\\\").replace("'", "\\'")
        params: dict[str, Any] = {
            "query": f"metadata['{COMMAND_METADATA_KEY}']:'{escaped}'",
            "limit": SEARCH_PAGE_LIMIT,
        }
        found: list[Any] = []
        for _ in range(MAX_LOOKUP_PAGES):
            page = self._client.v1.payment_intents.search(params=params)  # type: ignore[arg-type]
            found.extend(page.data)
            if not page.has_more or not page.next_page:
                return found
            params["page"] = page.next_page
        raise GatewayLookupFailed(
            f"more than {MAX_LOOKUP_PAGES} pages of payments for {command_ref}"
        )

    def _scan_intents(self, command_ref: str) -> list[Any]:
        params: dict[str, Any] = {"limit": LIST_SCAN_PAGE_LIMIT}
        found: list[Any] = []
        for _ in range(MAX_LIST_SCAN_PAGES):
            page = self._client.v1.payment_intents.list(params=params)  # type: ignore[arg-type]
            for intent in page.data:
                if _get(_get(intent, "metadata"), COMMAND_METADATA_KEY) == command_ref:
                    found.append(intent)
            if not page.has_more or not page.data:
                return found
            params["starting_after"] = page.data[-1].id
        # Absence is not proven when the scan stopped early: say so instead of answering "none".
        raise GatewayLookupFailed(
            f"list scan for {command_ref} exceeded {MAX_LIST_SCAN_PAGES} pages"
        )

    # --- refunds -----------------------------------------------------------------------------
    def create_refund(self, request: RefundRequest) -> RefundResult:
        params: dict[str, Any] = {
            "payment_intent": request.payment_reference,
            "amount": request.amount_minor,
            "metadata": {COMMAND_METADATA_KEY: request.command_ref},
        }
        try:
            refund = self._client.v1.refunds.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as exc:
            outcome = classify_error(exc)
            error = getattr(exc, "error", None)
            failure_code = (
                (_failure_code(error) or "refund_refused") if outcome is Outcome.DECLINED else None
            )
            return RefundResult(
                outcome,
                failure_code=failure_code,
                failure_message=(exc.user_message or str(exc)) if failure_code else None,
                detail=_describe(exc),
            )
        return refund_result_from_refund(refund)

    def find_refunds(self, payment_reference: str, command_ref: str) -> list[RefundResult]:
        """The payment's refunds made by this command (listing by payment_intent is exact:
        unlike search, it is not eventually consistent)."""
        found: list[RefundResult] = []
        starting_after: str | None = None
        for _ in range(MAX_LIST_SCAN_PAGES):
            params: dict[str, Any] = {
                "payment_intent": payment_reference,
                "limit": LIST_SCAN_PAGE_LIMIT,
            }
            if starting_after is not None:
                params["starting_after"] = starting_after
            try:
                page = self._client.v1.refunds.list(params=params)  # type: ignore[arg-type]
            except stripe.StripeError as exc:
                raise GatewayLookupFailed(_describe(exc)) from exc
            for refund in page.data:
                metadata = _get(refund, "metadata") or {}
                if _get(metadata, COMMAND_METADATA_KEY) == command_ref:
                    found.append(refund_result_from_refund(refund))
            if not page.has_more or not page.data:
                return found
            starting_after = str(page.data[-1].id)
        raise GatewayLookupFailed(
            f"refund scan for {payment_reference} exceeded {MAX_LIST_SCAN_PAGES} pages"
        )

    def close(self) -> None:
        self._http_client.close()  # type: ignore[no-untyped-call]
