"""Many seeds: sequentially, or in worker processes (each seed is independent and deterministic,
so running them in parallel changes nothing but the wall clock)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

from billkeep.sim.runner import SimOptions, SimResult, run_seed

__all__ = ["run_many"]


def run_many(
    options: Iterable[SimOptions],
    *,
    jobs: int = 1,
    on_result: Callable[[SimResult], None] | None = None,
) -> list[SimResult]:
    """Run every seed; results in seed order. `on_result` sees each as it finishes."""
    planned = list(options)
    assert jobs >= 1
    results: list[SimResult] = []
    if jobs == 1 or len(planned) <= 1:
        for option in planned:
            result = run_seed(option)
            results.append(result)
            if on_result is not None:
                on_result(result)
    else:
        assert all(o.database_url is None for o in planned), "parallel runs need their own SQLite"
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_seed, option) for option in planned]
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return sorted(results, key=lambda r: r.seed)
