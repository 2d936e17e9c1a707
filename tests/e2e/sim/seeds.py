"""Seeds the simulation has ever failed on, and the budget of the CI sweep.

Every seed that ever failed is listed here with the steps it ran, the extensions that were in
the run (each extension adds actions, so a seed replays its old scenario only with the same set)
and why, and becomes a regression test. A seed failing because of an engine bug that is not fixed
yet is listed in KNOWN_ENGINE_BUGS: its regression test is a strict xfail (it turns red the day the
bug is fixed, so the entry moves to REGRESSION_SEEDS), and the sweep skips exactly those runs.
"""

from __future__ import annotations

import os

__all__ = ["CORE_ONLY", "KNOWN_ENGINE_BUGS", "REGRESSION_SEEDS", "SWEEP_SEEDS", "SWEEP_STEPS"]

# A run: (seed, steps, extensions in the run).
Run = tuple[int, int, frozenset[str]]
CORE_ONLY: frozenset[str] = frozenset()  # charges and refunds, before any extension existed

SWEEP_SEEDS = int(os.environ.get("BILLKEEP_SIM_SEEDS", "200"))
SWEEP_STEPS = int(os.environ.get("BILLKEEP_SIM_STEPS", "25"))

# (seed, steps) -> what it found; these pass now.
STALE_KEY_RESEND = (
    "I1: charge.create's `attempt_recorded` step re-sent the attempt's gateway key without "
    "checking its age; after a crash (or a not_executed retry of an unknown outcome) and a gap "
    "longer than the gateway's 24 h key retention, the gateway had forgotten the key and made a "
    "second payment. Fixed: sending goes through resolution (same key while remembered, else lookup)"
)
REFUND_STALE_KEY = (
    "I7/I4: refund.create re-sent the refund's gateway key after the gateway's 24 h retention: the "
    "gateway refunded twice, or refused it as already refunded and billkeep recorded a failure. "
    "Fixed: after the retention, the gateway's refunds of the payment are looked up first"
)
RECONCILIATION_RUN_TWICE = (
    "I4 (reconciliation report): a reconciliation run whose command lease expired while the run "
    "was reading the gateway was executed again by a worker (lease taken over) while the first "
    "execution was still going; nothing inside `ReconciliationRunner.run` was fenced, so both "
    "executions wrote the run's breaks: the run reported records twice (seed 73: reconciler-1 "
    "parked at gateway:reconcile_list:request, clock +51 min, worker-1 re-runs and completes, "
    "reconciler-1 resumes and writes its breaks too). Fixed: every write transaction of a run "
    "checks its command's fencing token first (`command_store.check_fence`)"
)
RECONCILIATION_AND_WEBHOOKS = frozenset({"reconciliation", "webhooks"})
REGRESSION_SEEDS: dict[Run, str] = {
    (3, 60, CORE_ONLY): "harness: a cross-tenant key probe reused a key its own tenant already had",
    (1, 150, CORE_ONLY): STALE_KEY_RESEND + "; then " + REFUND_STALE_KEY,
    (3, 150, CORE_ONLY): STALE_KEY_RESEND,
    (17, 25, CORE_ONLY): STALE_KEY_RESEND,
    (122, 25, CORE_ONLY): STALE_KEY_RESEND,
    (17, 60, CORE_ONLY): STALE_KEY_RESEND,
    (189, 25, CORE_ONLY): REFUND_STALE_KEY + "; also harness: a request held 25 h on the wire was "
    "delivered (the model now loses requests older than MAX_IN_FLIGHT_MS, as a network does)",
    (73, 25, RECONCILIATION_AND_WEBHOOKS): RECONCILIATION_RUN_TWICE,
    (97, 25, RECONCILIATION_AND_WEBHOOKS): RECONCILIATION_RUN_TWICE,
    (143, 25, RECONCILIATION_AND_WEBHOOKS): RECONCILIATION_RUN_TWICE,
}

# run -> the engine bug it exposes; strict xfail until fixed.
KNOWN_ENGINE_BUGS: dict[Run, str] = {}
