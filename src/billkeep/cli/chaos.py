"""`billkeep chaos`: the real-process chaos run; with a long `--duration`, the soak test."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from billkeep.chaos import ChaosConfig, ChaosReport, run_chaos

__all__ = ["register"]

_CHECKED = ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "I10", "I11")
_SHOWN_VIOLATIONS = 30


def chaos(
    duration: float = typer.Option(60.0, "--duration", min=1.0, help="Seconds of chaos."),
    database_url: str | None = typer.Option(
        None, "--database-url", envvar="BILLKEEP_DATABASE_URL", help="PostgreSQL, migrated."
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds the workload, kills and gateway faults."),
    servers: int = typer.Option(2, "--servers", min=1),
    workers: int = typer.Option(3, "--workers", min=1),
    no_faults: bool = typer.Option(False, "--no-faults", help="Kills only, no gateway faults."),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Keep logs here."),
) -> None:
    """Servers, workers and a faulty gateway simulator as real processes, `kill -9` chaos, then
    recovery and an audit of the invariants. Exits 1 on any violation."""
    if not database_url or not database_url.startswith("postgresql"):
        raise typer.BadParameter(
            "a PostgreSQL --database-url is required", param_hint="--database-url"
        )
    console = Console()
    config = ChaosConfig(
        database_url=database_url,
        duration_s=duration,
        seed=seed,
        servers=servers,
        workers=workers,
        faults=not no_faults,
        work_dir=work_dir,
    )
    report = run_chaos(config, progress=lambda text: console.print(f"[dim]{text}[/dim]"))
    render(console, report)
    raise typer.Exit(0 if report.ok else 1)


def render(console: Console, report: ChaosReport) -> None:
    summary = Table(title=f"chaos run, seed {report.config.seed}", show_header=False)
    summary.add_row(
        "kills (server / worker)", f"{report.kills['server']} / {report.kills['worker']}"
    )
    summary.add_row("restarts", str(report.restarts))
    summary.add_row(
        "requests by status", ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses.items()))
    )
    summary.add_row(
        "client events", ", ".join(f"{k}: {v}" for k, v in sorted(report.outcomes.items()))
    )
    summary.add_row("idempotency keys", str(report.keys))
    summary.add_row("gateway faults fired", str(report.faults_fired))
    summary.add_row("unknown outcomes (commands)", str(report.unknown_outcomes))
    if report.sim_state is not None:
        summary.add_row("gateway payments", str(report.sim_state["payment_intents"]["by_status"]))
    summary.add_row("timings (s)", ", ".join(f"{k}: {v:.1f}" for k, v in report.timings_s.items()))
    console.print(summary)
    verdicts = Table("invariant", "verdict", "violations")
    for name in _CHECKED:
        count = sum(1 for v in report.violations if v.invariant == name)
        verdicts.add_row(name, "[red]FAIL[/red]" if count else "[green]pass[/green]", str(count))
    console.print(verdicts)
    for violation in report.violations[:_SHOWN_VIOLATIONS]:
        console.print(f"[red]{violation}[/red]", markup=False)
    for error in report.errors[:_SHOWN_VIOLATIONS]:
        console.print(f"harness error: {error}", markup=False, style="yellow")
    console.print("[green]OK[/green]" if report.ok else "[red]VIOLATIONS[/red]")


def register(app: typer.Typer) -> None:
    app.command("chaos")(chaos)
