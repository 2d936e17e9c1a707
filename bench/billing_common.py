"""Shared setup of the billing benchmarks: a fresh PostgreSQL database and a tenant with a plan."""

from __future__ import annotations

import os
import platform
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from billkeep.domain.clock import ManualClock
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head

__all__ = ["fresh_database", "machine_description", "setup_tenant"]

ADMIN_URL = os.environ.get(
    "BILLKEEP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"billkeep_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        db = Database(url)
        upgrade_to_head(db)
        db.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def machine_description() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )


def setup_tenant(
    url: str,
    clock: ManualClock,
    *,
    subscriptions: int,
    starts_ms: list[int] | None = None,
    prices: list[dict[str, object]] | None = None,
) -> tuple[str, list[str]]:
    from tests.integration.billing.helpers import bulk_subscriptions, create_metric, create_plan

    bk = Billkeep(Database(url), StaticGatewayDirectory(FakeGateway(clock=clock)), clock=clock)
    tenant, _ = bk.tenants.create_tenant("bench", clock.now_ms())
    create_metric(bk, tenant, "units")
    plan = create_plan(
        bk, tenant, "bench", prices or [{"type": "per_unit", "metric": "units", "unit_amount": 3}]
    )
    starts = starts_ms or [clock.now_ms() - 40 * 86_400_000] * subscriptions
    subs = bulk_subscriptions(bk, tenant, plan, starts)
    bk.close()
    return tenant, subs
