"""The "the lock did not save us" fault: a billing run reads due subscriptions from an old snapshot.

A run with a stale snapshot, a replica read or a lost row lock can see a subscription as due for a
period another run already invoiced. Like the runner's stale key read, the real read
(`billing.invoicing._due_subscriptions`) is replaced for chosen actors only, once each: that
actor's next read returns the subscription rows as an earlier snapshot had them. The unique
(tenant_id, subscription_id, period_start_ms) of invoices must then decide that the period is
already invoiced.

The replacement is installed once per process and dispatches to the running simulation's reader
(`set_reader`); with no reader, or for any other actor, it is the real read. So a run that ends
early (a violation, an abort) leaves nothing behind that changes the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from billkeep.billing import invoicing

__all__ = ["StaleRead", "install", "set_reader"]

# (conn, as_of_ms, tenant_id, limit) -> rows, or None to read for real.
StaleRead = Callable[[Connection, int, "str | None", int], "list[Any] | None"]

_READER: list[StaleRead | None] = [None]
_REAL: list[Callable[..., list[Any]]] = []


def _dispatch(conn: Connection, as_of_ms: int, tenant_id: str | None, limit: int) -> list[Any]:
    reader = _READER[0]
    if reader is not None:
        stale = reader(conn, as_of_ms, tenant_id, limit)
        if stale is not None:
            return stale
    return _REAL[0](conn, as_of_ms, tenant_id, limit)


def install() -> None:
    if not _REAL:
        _REAL.append(invoicing._due_subscriptions)
        invoicing._due_subscriptions = _dispatch


def set_reader(reader: StaleRead | None) -> None:
    install()
    _READER[0] = reader
