"""The database goes away and comes back: 503 database_unavailable, nothing half-written, recovery.

Runs its own throw-away PostgreSQL cluster (initdb on a spare port), never the shared server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.integration.api.conftest import Api

from billkeep.storage.database import Database
from billkeep.storage.migrate import upgrade_to_head
from billkeep.storage.tables.core import charges, commands

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not (PG_BIN / "initdb").exists() or os.geteuid() != 0 or shutil.which("runuser") is None,
        reason="needs PostgreSQL 15 binaries and root (to run them as the postgres user)",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", PG_USER, "--", str(PG_BIN / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        log = str(self.data_dir.parent / "postgres.log")
        self._pg("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="billkeep-pg-"))
    shutil.chown(root, PG_USER, PG_USER)
    data_dir = root / "data"
    made = Cluster(data_dir, free_port())
    made._pg("initdb", "-D", str(data_dir), "-A", "trust", "-U", PG_USER, "--no-sync")
    made.start()
    try:
        yield made
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            made.stop()
        shutil.rmtree(root, ignore_errors=True)


def _count(api: Api, table: sa.Table) -> int:
    with api.billkeep.db.read() as conn:
        return len(conn.execute(table.select().where(table.c.tenant_id == api.tenant_id)).all())


def test_outage_gives_503_records_nothing_and_recovers(
    cluster: Cluster, make_api: Callable[..., Api]
) -> None:
    db = Database(cluster.url)
    upgrade_to_head(db)
    db.dispose()
    api = make_api(cluster.url)
    customer_id = api.customer()
    body = {"customer_id": customer_id, "amount": 300, "currency": "usd"}
    assert api.post("/v1/charges", body, "before").status_code == 201

    cluster.stop()
    health = api.client.get("/healthz")
    assert health.status_code == 503
    assert health.json() == {"status": "degraded", "database": "unavailable"}
    for response in (api.get("/v1/charges"), api.post("/v1/charges", body, "during")):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "database_unavailable"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["request-id"]

    cluster.start()
    # The pool notices dead connections and reconnects by itself: no restart needed.
    assert api.client.get("/healthz").status_code == 200
    assert api.get("/v1/charges").status_code == 200
    assert _count(api, commands) == 2, "the request during the outage recorded nothing"
    retried = api.post("/v1/charges", body, "during")
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert _count(api, charges) == 2
    assert api.gateway.payment_count() == 2
