"""`billkeep sim`: the deterministic simulation with its independent auditor.

`billkeep sim --seed 42` runs one seed and prints its trace and data digests (run it twice: they
match). `billkeep sim --seeds 500` sweeps seeds 0..499 with a progress bar and prints every failing
seed with the tail of its trace. `--mutate NAME` removes one safeguard to show the auditor notices.
"""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from billkeep.sim.mutations import MUTATIONS
from billkeep.sim.runner import DEFAULT_STEPS, SimOptions, SimResult, run_seed
from billkeep.sim.sweep import run_many

__all__ = ["register"]


def _print_result(console: Console, result: SimResult, *, full_trace: bool) -> None:
    verdict = "[green]OK[/green]" if result.ok else "[red]FAIL[/red]"
    console.print(f"seed {result.seed}: {verdict}  ({result.profile})")
    console.print(f"  trace digest    {result.trace_digest}")
    console.print(f"  database digest {result.db_digest}")
    console.print(f"  gateway digest  {result.gateway_digest}")
    console.print(f"  stats {result.stats}")
    for violation in result.violations:
        console.print(f"  [red]{violation}[/red]", markup=True, highlight=False)
    if full_trace or not result.ok:
        lines = result.trace if full_trace else result.short_trace()
        for line in lines:
            console.print(f"    {line}", markup=False, highlight=False)


def sim(
    seed: int | None = typer.Option(None, "--seed", help="Run this one seed."),
    seeds: int | None = typer.Option(None, "--seeds", help="Sweep this many seeds."),
    start: int = typer.Option(0, "--start", help="First seed of a sweep."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", min=1, help="Workload steps per seed."),
    database_url: str | None = typer.Option(
        None, "--database-url", help="PostgreSQL URL (emptied first!); default: a temp SQLite file."
    ),
    mutate: str | None = typer.Option(
        None, "--mutate", help="Remove one safeguard (see --list-mutations)."
    ),
    list_mutations: bool = typer.Option(False, "--list-mutations"),
    jobs: int = typer.Option(0, "--jobs", help="Worker processes for a sweep (0: one per CPU)."),
    trace: bool = typer.Option(False, "--trace", help="Print the whole trace of a single seed."),
    audit_every: int = typer.Option(1, "--audit-every", min=1, help="Audit after every Nth step."),
) -> None:
    """Deterministic simulation: faults, crashes and races from a seed; invariants I1-I11 audited."""
    console = Console()
    if list_mutations:
        for mutation in MUTATIONS.values():
            console.print(f"{mutation.name:20} removes: {mutation.safeguard}")
        return
    if mutate is not None and mutate not in MUTATIONS:
        raise typer.BadParameter(f"unknown mutation; known: {', '.join(sorted(MUTATIONS))}")
    if (seed is None) == (seeds is None):
        raise typer.BadParameter("give exactly one of --seed or --seeds")

    def options(s: int) -> SimOptions:
        return SimOptions(
            seed=s, steps=steps, database_url=database_url, mutation=mutate, audit_every=audit_every
        )

    if seed is not None:
        result = run_seed(options(seed))
        _print_result(console, result, full_trace=trace)
        raise typer.Exit(0 if result.ok else 1)
    assert seeds is not None
    workers = 1 if database_url else (jobs or os.cpu_count() or 1)
    failed: list[SimResult] = []
    with Progress(
        TextColumn("[bold]sim"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failing: {task.fields[failing]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("seeds", total=seeds, failing=0)

        def on_result(result: SimResult) -> None:
            if not result.ok:
                failed.append(result)
            progress.update(task, advance=1, failing=len(failed))

        run_many(
            [options(s) for s in range(start, start + seeds)], jobs=workers, on_result=on_result
        )
    for result in sorted(failed, key=lambda r: r.seed):
        _print_result(console, result, full_trace=False)
    console.print(
        f"{seeds - len(failed)}/{seeds} seeds passed"
        + (f"; failing seeds: {sorted(r.seed for r in failed)}" if failed else "")
    )
    raise typer.Exit(1 if failed else 0)


def register(app: typer.Typer) -> None:
    app.command("sim")(sim)
