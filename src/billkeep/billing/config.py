"""Named limits and schedules of billing runs and dunning (all durations in milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DAY_MS", "DEFAULT_DUNNING_DELAYS_MS", "BillingConfig"]

DAY_MS = 86_400_000
# After the first decline retry in 1 day, after the second in 3 days, after the third in 5 days;
# a fourth decline makes the invoice uncollectible.
DEFAULT_DUNNING_DELAYS_MS: tuple[int, ...] = (1 * DAY_MS, 3 * DAY_MS, 5 * DAY_MS)


@dataclass(frozen=True)
class BillingConfig:
    # Delay before retry n+1 after the n-th declined attempt; past the last one: uncollectible.
    dunning_delays_ms: tuple[int, ...] = DEFAULT_DUNNING_DELAYS_MS
    # Subscriptions locked and invoiced in one transaction (FOR UPDATE SKIP LOCKED on PostgreSQL).
    invoice_batch_size: int = 100
    # Periods of one subscription invoiced per batch (a long-idle subscription catches up in steps).
    max_periods_per_subscription: int = 24
    # Invoices claimed for a charge attempt per transaction.
    charge_batch_size: int = 50
    # An attempt in flight holds its invoice this long; past it another worker resumes the SAME
    # attempt (same business key). Longer than the engine's command lease so a resumed command
    # is claimable by then.
    charge_lease_ms: int = 60_000
    # Safety bound on the loops of one billing run (each round is one batch).
    max_rounds_per_run: int = 100_000

    def __post_init__(self) -> None:
        assert all(delay > 0 for delay in self.dunning_delays_ms), "retries move forward in time"
        assert self.invoice_batch_size >= 1 and self.charge_batch_size >= 1
        assert self.max_periods_per_subscription >= 1
        assert self.charge_lease_ms >= 1_000
