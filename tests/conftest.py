"""Fixtures shared by all tests. `db_url` runs a test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from billkeep.domain.clock import ManualClock
from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from tests.support.databases import PostgresProvisioner, postgres_available

_provisioner: PostgresProvisioner | None = None

# Property tests judge results, not speed: on a loaded 2-core CI machine (pytest -n 2 beside
# PostgreSQL and server processes) an example can exceed hypothesis' 200 ms deadline by chance.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(scope="session")
def pg_provisioner() -> Iterator[PostgresProvisioner]:
    global _provisioner
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable")
    _provisioner = PostgresProvisioner()
    yield _provisioner
    _provisioner.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'billkeep.db'}"
    db = Database(url)
    upgrade_to_head(db)
    db.dispose()
    return url


@pytest.fixture
def pg_url(pg_provisioner: PostgresProvisioner) -> Iterator[str]:
    with pg_provisioner.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database of each engine."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gateway(clock: ManualClock) -> FakeGateway:
    return FakeGateway(clock=clock)


@pytest.fixture
def make_billkeep(clock: ManualClock) -> Iterator[Callable[..., Billkeep]]:
    opened: list[Billkeep] = []

    def make(url: str, gateway: FakeGateway | None = None, **config: object) -> Billkeep:
        bk = Billkeep(
            Database(url),
            StaticGatewayDirectory(gateway or FakeGateway(clock=clock)),
            clock=clock,
            config=EngineConfig(**config),  # type: ignore[arg-type]
        )
        opened.append(bk)
        return bk

    yield make
    for bk in opened:
        bk.close()


@pytest.fixture
def bk(db_url: str, gateway: FakeGateway, make_billkeep: Callable[..., Billkeep]) -> Billkeep:
    return make_billkeep(db_url, gateway)


@pytest.fixture
def tenant(bk: Billkeep, clock: ManualClock) -> str:
    tenant_id, _key = bk.tenants.create_tenant("test tenant", clock.now_ms())
    return tenant_id


@pytest.fixture
def customer_id(bk: Billkeep, tenant: str) -> str:
    result = bk.create_customer(
        tenant, {"email": "c@example.com", "payment_method": "pm_card_visa"}, "cust-1"
    )
    assert result.status == 201
    return str(result.body()["id"])
