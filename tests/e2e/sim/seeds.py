"""Seeds the simulation has ever failed on, and the budget of the CI sweep.

Every seed that ever failed is listed here with the steps it ran and why, and becomes a
regression test. A seed failing because of an engine bug that is not fixed yet is listed in
KNOWN_ENGINE_BUGS: its regression test is a strict xfail (it turns red the day the bug is fixed,
so the entry moves to REGRESSION_SEEDS), and the sweep skips exactly those (seed, steps) runs.
"""

from __future__ import annotations

import os

__all__ = ["KNOWN_ENGINE_BUGS", "REGRESSION_SEEDS", "SWEEP_SEEDS", "SWEEP_STEPS"]

SWEEP_SEEDS = int(os.environ.get("BILLKEEP_SIM_SEEDS", "200"))
SWEEP_STEPS = int(os.environ.get("BILLKEEP_SIM_STEPS", "25"))

# (seed, steps) -> what it found; these pass now.
REGRESSION_SEEDS: dict[tuple[int, int], str] = {
    (3, 60): "harness: a cross-tenant key probe reused a key its own tenant already had",
}

STALE_KEY_RESEND = (
    "I1: charge.create's `attempt_recorded` step re-sends the attempt's gateway key without "
    "checking its age; after a crash (or a not_executed retry of an unknown outcome) and a gap "
    "longer than the gateway's 24 h key retention, the gateway has forgotten the key and makes a "
    "second payment"
)

# (seed, steps) -> the engine bug it exposes; strict xfail until fixed.
KNOWN_ENGINE_BUGS: dict[tuple[int, int], str] = {
    (1, 150): STALE_KEY_RESEND
    + "; with that fixed, the same seed then shows the refund twin of the bug (I4): a refund whose "
    "outcome was unknown is re-sent after the gateway forgot its key, declined as already "
    "refunded, and recorded as failed while the gateway refunded the money",
    (3, 150): STALE_KEY_RESEND,
    (17, 25): STALE_KEY_RESEND,
    (122, 25): STALE_KEY_RESEND,
    (189, 25): "I7/I4: refund.create's `refund_recorded` re-sends the refund's gateway key after "
    "the gateway's 24 h retention (the first call committed, its answer was lost): the gateway "
    "refunds a second time",
    (17, 60): STALE_KEY_RESEND,
}
