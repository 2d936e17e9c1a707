"""`billkeep serve`: the HTTP API on uvicorn (see docs/api.md for every setting)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import typer

__all__ = ["prepare_metrics_dir", "register", "serve"]

APP_FACTORY = "billkeep.api.main:app_from_env"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(workers: int) -> Path | None:
    """With several workers, give prometheus-client a fresh directory for per-process samples.

    An existing PROMETHEUS_MULTIPROC_DIR is emptied of sample files (stale files of a previous
    run would be counted again); otherwise a temporary one is created and returned for cleanup.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return None
    if workers <= 1:
        return None
    created = Path(tempfile.mkdtemp(prefix="billkeep-metrics-"))
    os.environ[MULTIPROC_ENV] = str(created)
    return created


def serve(
    host: str = typer.Option("127.0.0.1", "--host", envvar="BILLKEEP_HOST", help="Bind address."),
    port: int = typer.Option(8000, "--port", envvar="BILLKEEP_PORT", help="TCP port."),
    workers: int = typer.Option(
        1, "--workers", envvar="BILLKEEP_WORKERS", min=1, help="uvicorn worker processes."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", envvar="BILLKEEP_DATABASE_URL", help="Database URL."
    ),
    log_level: str = typer.Option("info", "--log-level", envvar="BILLKEEP_LOG_LEVEL"),
) -> None:
    """Serve the HTTP API. The schema is migrated once before the workers start."""
    import uvicorn

    from billkeep.runtime import open_billkeep
    from billkeep.storage.database import database_url_from_env

    url = database_url or database_url_from_env()
    os.environ["BILLKEEP_DATABASE_URL"] = url  # the workers build their app from the environment
    os.environ["BILLKEEP_LOG_LEVEL"] = log_level.upper()
    # Build the engine once here: it migrates the schema before any worker starts, and a bad
    # configuration (no secret key, unreachable database) stops the command with its reason
    # instead of a loop of dying workers.
    open_billkeep(url, migrate=True).close()
    os.environ["BILLKEEP_MIGRATE_ON_START"] = "0"
    created = prepare_metrics_dir(workers)
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level.lower(),
            access_log=False,  # the app logs one structured line per request
        )
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
