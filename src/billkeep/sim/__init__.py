"""Deterministic simulation of billkeep: one process, one seed, faults everywhere, an auditor.

`run_seed(SimOptions(seed=...))` runs the real engine on a real database against the in-process
gateway simulator, with a seeded scheduler interleaving logical clients and workers, and checks
the invariants I1-I11 after every step and at the end.
"""

from __future__ import annotations

from billkeep.sim.auditor import Auditor, Violation
from billkeep.sim.runner import DEFAULT_STEPS, SimOptions, SimResult, run_seed

__all__ = ["DEFAULT_STEPS", "Auditor", "SimOptions", "SimResult", "Violation", "run_seed"]
