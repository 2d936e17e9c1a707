"""Stripe object shapes (fields, JSON types, nesting as in Stripe's fixtures); unused fields null."""

from __future__ import annotations

from typing import Any

from billkeep.gateways.simulator.cards import TestCard
from billkeep.gateways.simulator.errors import JsonObject

__all__ = [
    "API_VERSION",
    "balance_transaction_object",
    "card_details",
    "charge_object",
    "customer_object",
    "dispute_object",
    "event_object",
    "list_envelope",
    "payment_intent_object",
    "refund_object",
    "search_envelope",
]

API_VERSION = "2026-02-25.clover"  # what the installed stripe package pins
_AVAILABLE_AFTER_S = 2 * 24 * 60 * 60

_EVIDENCE_FIELDS = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
)


def _null_address() -> JsonObject:
    return dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state"))


def list_envelope(data: list[JsonObject], has_more: bool, url: str) -> JsonObject:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def search_envelope(
    data: list[JsonObject], has_more: bool, next_page: str | None, url: str
) -> JsonObject:
    return {
        "object": "search_result",
        "data": data,
        "has_more": has_more,
        "next_page": next_page,
        "url": url,
    }


def customer_object(
    customer_id: str,
    created_s: int,
    *,
    email: str | None,
    name: str | None,
    description: str | None,
    phone: str | None,
    metadata: dict[str, str],
) -> JsonObject:
    return {
        "id": customer_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created_s,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": description,
        "discount": None,
        "email": email,
        "invoice_prefix": customer_id[-8:].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": metadata,
        "name": name,
        "next_invoice_sequence": 1,
        "phone": phone,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def payment_intent_object(
    intent_id: str,
    created_s: int,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    payment_method: str | None,
    description: str | None,
    metadata: dict[str, str],
    status: str,
) -> JsonObject:
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{intent_id}_secret_{intent_id[-12:]}",
        "confirmation_method": "automatic",
        "created": created_s,
        "currency": currency,
        "customer": customer,
        "customer_account": None,
        "description": description,
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": metadata,
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": payment_method,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def card_details(card: TestCard) -> JsonObject:
    return {
        "card": {
            "amount_authorized": None,
            "authorization_code": None,
            "brand": card.brand,
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": "pass",
            },
            "country": "US",
            "exp_month": 12,
            "exp_year": 2034,
            "extended_authorization": {"status": "disabled"},
            "fingerprint": f"sim{card.last4}fp",
            "funding": "credit",
            "incremental_authorization": {"status": "unavailable"},
            "installments": None,
            "last4": card.last4,
            "mandate": None,
            "multicapture": {"status": "unavailable"},
            "network": card.brand,
            "network_token": {"used": False},
            "network_transaction_id": None,
            "overcapture": {"maximum_amount_capturable": 0, "status": "unavailable"},
            "regulated_status": None,
            "three_d_secure": None,
            "transaction_link_id": None,
            "wallet": None,
        },
        "type": "card",
    }


def _outcome(card: TestCard, status: str) -> JsonObject:
    declined = status == "failed"
    return {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": "declined_by_network" if declined else "approved_by_network",
        "reason": card.decline_code if declined else None,
        "risk_level": "normal",
        "seller_message": (
            "The bank did not return any further details with this decline."
            if declined
            else "Payment complete."
        ),
        "type": "issuer_declined" if declined else "authorized",
    }


def charge_object(
    charge_id: str,
    created_s: int,
    *,
    intent: JsonObject,
    card: TestCard,
    status: str,
    balance_transaction: str | None,
) -> JsonObject:
    succeeded = status == "succeeded"
    failed = status == "failed"
    return {
        "id": charge_id,
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": intent["amount"] if succeeded else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": balance_transaction,
        "billing_details": {
            "address": _null_address(),
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "BILLKEEP SIM",
        "captured": succeeded,
        "created": created_s,
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": "card_declined" if failed else None,
        "failure_message": card.message if failed else None,
        "fraud_details": {},
        "livemode": False,
        "metadata": dict(intent["metadata"]),
        "on_behalf_of": None,
        "outcome": None if status == "pending" else _outcome(card, status),
        "paid": succeeded,
        "payment_intent": intent["id"],
        "payment_method": card.payment_method,
        "payment_method_details": card_details(card),
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": False,
        "refunds": list_envelope([], False, f"/v1/charges/{charge_id}/refunds"),
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def refund_object(
    refund_id: str,
    created_s: int,
    *,
    charge: JsonObject,
    amount: int,
    metadata: dict[str, str],
    reason: str | None,
    balance_transaction: str | None,
) -> JsonObject:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": balance_transaction,
        "charge": charge["id"],
        "created": created_s,
        "currency": charge["currency"],
        "customer": charge["customer"],
        "customer_account": None,
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "metadata": metadata,
        "payment_intent": charge["payment_intent"],
        "payment_method": charge["payment_method"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


def balance_transaction_object(
    txn_id: str,
    created_s: int,
    *,
    amount: int,
    fee: int,
    currency: str,
    source: str,
    type_: str,
    description: str | None,
) -> JsonObject:
    fee_details: list[JsonObject] = []
    if fee:
        fee_details.append(
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
            }
        )
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "amount": amount,
        "available_on": created_s + _AVAILABLE_AFTER_S,
        "balance_type": "payments",
        "created": created_s,
        "currency": currency,
        "description": description,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": fee_details,
        "net": amount - fee,
        "reporting_category": type_,
        "source": source,
        "status": "available",
        "type": type_,
    }


def dispute_object(
    dispute_id: str, created_s: int, *, charge: JsonObject, amount: int, reason: str
) -> JsonObject:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge["id"],
        "created": created_s,
        "currency": charge["currency"],
        "enhanced_eligibility_types": [],
        "evidence": {**dict.fromkeys(_EVIDENCE_FIELDS), "enhanced_evidence": {}},
        "evidence_details": {
            "due_by": created_s + 7 * 24 * 60 * 60,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "payment_method_details": {
            "card": {
                "brand": charge["payment_method_details"]["card"]["brand"],
                "case_type": "chargeback",
                "network": charge["payment_method_details"]["card"]["network"],
                "network_reason_code": "10.4",
            },
            "type": "card",
        },
        "reason": reason,
        "status": "needs_response",
    }


def event_object(
    event_id: str,
    created_s: int,
    *,
    type_: str,
    data_object: JsonObject,
    previous_attributes: dict[str, Any] | None,
    idempotency_key: str | None,
    pending_webhooks: int,
) -> JsonObject:
    data: JsonObject = {"object": data_object}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created_s,
        "data": data,
        "livemode": False,
        "pending_webhooks": pending_webhooks,
        "request": {"id": None, "idempotency_key": idempotency_key},
        "type": type_,
    }
