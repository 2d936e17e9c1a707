"""Entry point of the `billkeep` command.

Commands live in the modules of this package; each one that defines `register(app)` is loaded, so
adding a command never means editing this file. Errors end with a non-zero exit and a one-line
reason on standard error.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import typer

from billkeep.domain.errors import BillkeepError

__all__ = ["app", "fail", "main"]

app = typer.Typer(
    name="billkeep",
    help="billkeep: a billing transaction engine with exactly-once financial effects.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> None:
    """Exit with a one-line reason."""
    typer.echo(f"billkeep: error: {message}", err=True)
    raise typer.Exit(code)


def _load_commands() -> None:
    package = sys.modules[__package__ or "billkeep.cli"]
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module_info.name == "main":
            continue
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_load_commands()


def main(argv: list[str] | None = None) -> Any:
    try:
        return app(argv, standalone_mode=True)
    except BillkeepError as exc:
        fail(f"{exc.code}: {exc.detail}")
    return None
