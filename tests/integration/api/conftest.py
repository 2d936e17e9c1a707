"""In-process API fixtures: the FastAPI app over a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from billkeep.api.app import create_app
from billkeep.api.settings import ApiSettings
from billkeep.domain.clock import ManualClock
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway, Fault


@dataclass
class Api:
    client: TestClient
    billkeep: Billkeep
    tenant_id: str
    key: str
    gateway: FakeGateway

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def post(self, path: str, body: Any, key: str | None, **headers: str) -> httpx.Response:
        sent = dict(self.auth)
        if key is not None:
            sent["Idempotency-Key"] = key
        sent.update(headers)
        return self.client.post(path, json=body, headers=sent)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, headers=self.auth, params=params)

    def customer(self, key: str = "cus-key", **fields: Any) -> str:
        body = {"email": "c@example.com", "payment_method": "pm_card_visa", **fields}
        response = self.post("/v1/customers", body, key)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


class BlockingFaults:
    """A fault policy that holds gateway payment calls until released (to keep a command running)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, operation: str, _key: str) -> Fault | None:
        if operation == "create_payment":
            self.entered.set()
            assert self.release.wait(30), "test never released the gateway"
        return None


@pytest.fixture
def make_api(
    make_billkeep: Callable[..., Billkeep], clock: ManualClock
) -> Iterator[Callable[..., Api]]:
    clients: list[TestClient] = []

    def make(url: str, gateway: FakeGateway | None = None, **config: Any) -> Api:
        gateway = gateway or FakeGateway(clock=clock)
        billkeep = make_billkeep(url, gateway, **config)
        tenant_id, key = billkeep.tenants.create_tenant("api tenant", clock.now_ms())
        client = TestClient(
            create_app(billkeep, ApiSettings(log_json=True)), raise_server_exceptions=False
        )
        clients.append(client)
        return Api(client, billkeep, tenant_id, key, gateway)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def api(db_url: str, make_api: Callable[..., Api]) -> Api:
    return make_api(db_url)


@pytest.fixture
def sqlite_api(sqlite_url: str, make_api: Callable[..., Api]) -> Api:
    """For HTTP-only behaviour where running on both engines adds nothing."""
    return make_api(sqlite_url)
