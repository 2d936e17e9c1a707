"""`billkeep demo` against a real simulator process: it starts and stops the process, survives
the injected faults, and reports every unknown outcome as resolved."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from billkeep.cli.main import app


def test_demo_with_the_simulator_resolves_every_unknown_outcome(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["demo", "--database", str(tmp_path / "demo.db"), "--intents", "30", "--threads", "4",
         "--fault-probability", "0.5", "--seed", "3", "--billing-subscriptions", "12"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "exactly once held" in result.output
    assert "gateway calls with an unknown outcome" in result.output
    assert "unknown outcomes still unresolved (must be 0)" in result.output
    assert "billing exactly once held" in result.output
