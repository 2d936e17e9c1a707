"""Named limits of webhook ingestion and processing (units in the names)."""

from __future__ import annotations

from dataclasses import dataclass

from billkeep.gateways.signing import DEFAULT_TOLERANCE_S

__all__ = [
    "MAX_WEBHOOK_BODY_BYTES",
    "SIGNATURE_TOLERANCE_S",
    "WebhookConfig",
]

# Stripe events are a few KiB; 256 KiB leaves room for large metadata and bounds what an
# unauthenticated caller can make us read before the signature is checked.
MAX_WEBHOOK_BODY_BYTES = 256 * 1024
SIGNATURE_TOLERANCE_S = DEFAULT_TOLERANCE_S  # 300 s, both directions
MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS


@dataclass(frozen=True)
class WebhookConfig:
    """How parked events (about objects billkeep does not know yet) are retried and resolved."""

    # Delays between retries of a parked event: the charge command usually records its gateway
    # reference within a second, so the first retries come fast.
    park_retry_ms: tuple[int, ...] = (2_000, 10_000, MINUTE_MS, 5 * MINUTE_MS, 30 * MINUTE_MS)
    # After this long parked, ask the gateway about the object (to learn its billkeep command or
    # that billkeep did not make it) instead of waiting for it to appear.
    park_fetch_after_ms: int = 5 * MINUTE_MS
    # After this long parked, stop: the event is marked failed with the reason, for a human.
    park_give_up_ms: int = 7 * DAY_MS
    # Events processed per pass of `WebhookProcessor.process_due`.
    batch_size: int = 100

    def __post_init__(self) -> None:
        assert self.park_retry_ms and all(d > 0 for d in self.park_retry_ms)
        assert 0 <= self.park_fetch_after_ms <= self.park_give_up_ms
        assert self.batch_size >= 1

    def retry_delay_ms(self, attempts: int) -> int:
        schedule = self.park_retry_ms
        return schedule[min(max(attempts - 1, 0), len(schedule) - 1)]
