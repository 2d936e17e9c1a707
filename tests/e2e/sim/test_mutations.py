"""The sweep has teeth: with one safeguard removed, a known seed fails with the expected
invariant (docs/verification.md lists them). Without the mutation the same seed passes."""

from __future__ import annotations

import pytest

from billkeep.sim.mutations import MUTATIONS
from billkeep.sim.runner import SimOptions, run_seed

STEPS = 40

# mutation -> (seed that catches it at STEPS steps, invariant it reports)
CAUGHT_BY: dict[str, tuple[int, str]] = {
    "fencing": (0, "I8"),
    "refund_hold": (3, "I7"),
    "idempotency_unique": (1, "I1"),
    "attempt_key": (2, "I11"),
    "resolve_blind": (11, "I1"),
    "entry_key": (2, "I3"),
    "stale_event": (0, "I8"),
    # Needs the billing extension's stale subscription read (a run sees a period as due that
    # another run invoiced): with the row lock alone, overlapping runs never collide in one process.
    "invoice_unique": (28, "I6"),
    "run_restart": (120, "I4"),
    "fee_known": (0, "I4"),
    "run_fence": (17, "I4"),
}


def test_every_mutation_has_a_catching_seed() -> None:
    assert set(CAUGHT_BY) == set(MUTATIONS)


@pytest.mark.parametrize("mutation", sorted(CAUGHT_BY))
def test_mutation_is_caught(mutation: str) -> None:
    seed, invariant = CAUGHT_BY[mutation]
    mutated = run_seed(SimOptions(seed=seed, steps=STEPS, mutation=mutation))
    assert not mutated.ok, f"removing {mutation} went unnoticed on seed {seed}"
    assert invariant in {v.invariant for v in mutated.violations}, mutated.violations
    clean = run_seed(SimOptions(seed=seed, steps=STEPS))
    assert clean.ok, clean.violations
