"""Per-request facts shared between the middleware and the handlers (for logs and metrics).

Sync handlers run in a thread pool, where context variables set there do not flow back to the
middleware; a dict in the ASGI scope does.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

__all__ = ["SCOPE_KEY", "request_log"]

SCOPE_KEY = "billkeep.request_log"


def request_log(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    """The mutable record of this request: request_id, tenant_id, command_id, error_code."""
    log = scope.get(SCOPE_KEY)
    if log is None:
        log = {}
        scope[SCOPE_KEY] = log
    assert isinstance(log, dict)
    return log
