"""Structured JSON logs (structlog): one line per request with request id, tenant and command id."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["access_logger", "configure_logging"]

_configured = False


def configure_logging(*, json_output: bool = True, level: str = "INFO") -> None:
    """Configure structlog once per process (idempotent: apps created in tests share it)."""
    global _configured
    if _configured:
        return
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level, logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    _configured = True


def access_logger() -> Any:
    return structlog.get_logger("billkeep.api")
