"""Every seed the simulation ever failed on stays a test (see seeds.py for why each failed)."""

from __future__ import annotations

import pytest
from tests.e2e.sim.seeds import KNOWN_ENGINE_BUGS, REGRESSION_SEEDS

from billkeep.sim.runner import SimOptions, run_seed


@pytest.mark.parametrize(("seed", "steps"), sorted(REGRESSION_SEEDS))
def test_seed_that_once_failed_passes(seed: int, steps: int) -> None:
    result = run_seed(SimOptions(seed=seed, steps=steps))
    assert result.ok, (
        "\n".join(str(v) for v in result.violations) + "\n" + "\n".join(result.short_trace())
    )


@pytest.mark.parametrize(
    ("seed", "steps"),
    [
        pytest.param(seed, steps, marks=pytest.mark.xfail(strict=True, reason=reason))
        for (seed, steps), reason in sorted(KNOWN_ENGINE_BUGS.items())
    ],
)
def test_seed_exposing_a_known_engine_bug(seed: int, steps: int) -> None:
    result = run_seed(SimOptions(seed=seed, steps=steps))
    assert result.ok, "\n".join(str(v) for v in result.violations)
