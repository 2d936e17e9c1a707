"""The simulation on PostgreSQL: the same engine code path the SQLite sweep exercises, on the
production database. A small sweep (every invariant audited after every step) and determinism.

The trace of a seed may differ between the two engines (e.g. the recovery worker claims with
PostgreSQL's `FOR UPDATE SKIP LOCKED` query and SQLite's plain one, which can order candidates
differently), so the runs are compared within one engine, never across."""

from __future__ import annotations

import os

import pytest

from billkeep.sim.runner import SimOptions, SimResult, run_seed

pytestmark = pytest.mark.postgres

PG_SWEEP_SEEDS = int(os.environ.get("BILLKEEP_SIM_PG_SEEDS", "8"))
PG_SWEEP_STEPS = 25


def _report(result: SimResult) -> str:
    return (
        "\n".join(str(v) for v in result.violations[:5]) + "\n" + "\n".join(result.short_trace(20))
    )


def test_bounded_sweep_on_postgresql_finds_no_violation(pg_url: str) -> None:
    results = [
        run_seed(SimOptions(seed=seed, steps=PG_SWEEP_STEPS, database_url=pg_url))
        for seed in range(PG_SWEEP_SEEDS)
    ]
    for result in results:
        assert result.ok, f"seed {result.seed} on PostgreSQL:\n{_report(result)}"
    assert sum(r.stats["crashes"] for r in results) > 0
    assert sum(r.stats["payments"] for r in results) > 0


def test_same_seed_twice_on_postgresql_gives_the_same_digests(pg_url: str) -> None:
    first = run_seed(SimOptions(seed=5, steps=PG_SWEEP_STEPS, database_url=pg_url))
    second = run_seed(SimOptions(seed=5, steps=PG_SWEEP_STEPS, database_url=pg_url))
    assert first.ok, _report(first)
    assert first.trace == second.trace
    assert (first.db_digest, first.gateway_digest) == (second.db_digest, second.gateway_digest)
