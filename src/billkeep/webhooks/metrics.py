"""Webhook counters for /metrics. Rejected webhooks are stored nowhere else (nothing is stored
for an unauthenticated request), so this is where they are counted."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["WEBHOOKS_PROCESSED", "WEBHOOKS_RECEIVED", "WEBHOOKS_REJECTED"]

WEBHOOKS_RECEIVED = Counter(
    "billkeep_webhooks_received_total",
    "Webhook events accepted into the inbox, by whether they were duplicates.",
    ["duplicate"],
)
WEBHOOKS_REJECTED = Counter(
    "billkeep_webhooks_rejected_total",
    "Webhook requests rejected before storage, by reason code.",
    ["reason"],
)
WEBHOOKS_PROCESSED = Counter(
    "billkeep_webhooks_processed_total",
    "Webhook events processed, by outcome.",
    ["outcome"],
)
