"""Every seed the simulation ever failed on stays a test (see seeds.py for why each failed), run
with the extensions it failed with, so it replays the scenario that found the bug."""

from __future__ import annotations

import pytest
from tests.e2e.sim.seeds import KNOWN_ENGINE_BUGS, REGRESSION_SEEDS

from billkeep.sim.runner import SimOptions, run_seed


def _label(run: tuple[int, int, frozenset[str]]) -> str:
    seed, steps, extensions = run
    return f"{seed}-{steps}-{'+'.join(sorted(extensions)) or 'core'}"


@pytest.mark.parametrize("run", sorted(REGRESSION_SEEDS, key=_label), ids=_label)
def test_seed_that_once_failed_passes(run: tuple[int, int, frozenset[str]]) -> None:
    seed, steps, extensions = run
    result = run_seed(SimOptions(seed=seed, steps=steps, extensions=extensions))
    assert result.ok, (
        "\n".join(str(v) for v in result.violations) + "\n" + "\n".join(result.short_trace())
    )


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(run, marks=pytest.mark.xfail(strict=True, reason=reason), id=_label(run))
        for run, reason in sorted(KNOWN_ENGINE_BUGS.items(), key=lambda item: _label(item[0]))
    ],
)
def test_seed_exposing_a_known_engine_bug(run: tuple[int, int, frozenset[str]]) -> None:
    seed, steps, extensions = run
    result = run_seed(SimOptions(seed=seed, steps=steps, extensions=extensions))
    assert result.ok, "\n".join(str(v) for v in result.violations)
