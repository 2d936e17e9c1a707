"""Entry point of the `billkeep` command.

Commands live in the modules of this package; each one that defines `register(app)` is loaded, so
adding a command never means editing this file. Errors end with a non-zero exit and a one-line
reason on standard error.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from typing import Any

import typer

from billkeep.domain.errors import BillkeepError

__all__ = ["app", "fail", "main"]

MAX_REASON_CHARS = 500  # one line, however long the underlying message

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
    """The `billkeep` console script: any failure ends with a one-line reason and exit code 1
    (set BILLKEEP_DEBUG=1 to see the traceback instead)."""
    try:
        return app(argv, standalone_mode=True)
    except BillkeepError as exc:
        reason = f"{exc.code}: {exc.detail}"
    except Exception as exc:
        if os.environ.get("BILLKEEP_DEBUG") == "1":
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0]
        reason = f"{type(exc).__name__}: {first_line}"
    # Outside typer's own handling now: print the reason and leave with a plain SystemExit.
    sys.stderr.write(f"billkeep: error: {reason[:MAX_REASON_CHARS]}\n")
    raise SystemExit(1)
