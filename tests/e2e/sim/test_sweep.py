"""The CI sweep: a bounded number of seeds on SQLite, every invariant audited after every step.

Tune with BILLKEEP_SIM_SEEDS / BILLKEEP_SIM_STEPS (defaults: 200 seeds x 25 steps, a few minutes on
two cores). A failure prints each failing seed with the tail of its trace; reproduce one with
`billkeep sim --seed S --steps N --trace`.
"""

from __future__ import annotations

import os

from tests.e2e.sim.seeds import KNOWN_ENGINE_BUGS, SWEEP_SEEDS, SWEEP_STEPS

from billkeep.sim.runner import ALL_EXTENSIONS, SimOptions
from billkeep.sim.sweep import run_many


def test_bounded_sweep_finds_no_violation() -> None:
    planned = [
        SimOptions(seed=seed, steps=SWEEP_STEPS)
        for seed in range(SWEEP_SEEDS)
        if (seed, SWEEP_STEPS, ALL_EXTENSIONS) not in KNOWN_ENGINE_BUGS
    ]
    results = run_many(planned, jobs=max(1, os.cpu_count() or 1))
    assert len(results) == len(planned)
    failing = [r for r in results if not r.ok]
    report = "\n".join(
        f"seed {r.seed} (steps {SWEEP_STEPS}) at step {r.failed_step}:\n  "
        + "\n  ".join(str(v) for v in r.violations[:5])
        + "\n    "
        + "\n    ".join(r.short_trace(15))
        for r in failing
    )
    assert not failing, f"{len(failing)} failing seed(s):\n{report}"
    # The sweep must have exercised what it claims to: faults, crashes, refunds, audits.
    assert sum(r.stats["crashes"] for r in results) > 0
    assert sum(r.stats["gateway_faults"] for r in results) > 0
    assert sum(r.stats["refunds"] for r in results) > 0
    assert all(r.stats["audits"] >= SWEEP_STEPS for r in results)
    # Webhooks were delivered through every kind of network trouble, and some taught billkeep first.
    for counter in ("reordered", "duplicated", "dropped", "ack_lost", "receive_duplicate"):
        assert sum(r.stats.get(f"webhooks.{counter}", 0) for r in results) > 0, counter
    assert sum(r.stats.get("webhooks.outcome_applied", 0) for r in results) > 0
