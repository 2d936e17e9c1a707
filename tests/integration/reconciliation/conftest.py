"""Fixtures for webhook and reconciliation tests: an engine over each database, a webhook service
with one configured gateway endpoint, and the HTTP app over both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from billkeep.api.app import create_app
from billkeep.api.settings import ApiSettings
from billkeep.domain.clock import ManualClock
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.webhooks.endpoints import GatewayEndpoint, StaticWebhookEndpoints
from billkeep.webhooks.service import WebhookService

GATEWAY_ID = "gw_test"
SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"


@dataclass
class WebhookEnv:
    billkeep: Billkeep
    service: WebhookService
    endpoints: StaticWebhookEndpoints
    tenant_id: str
    clock: ManualClock

    def add_tenant(self, name: str) -> str:
        tenant_id, _key = self.billkeep.tenants.create_tenant(name, self.clock.now_ms())
        return tenant_id


@pytest.fixture
def fake_gateway(clock: ManualClock) -> FakeGateway:
    return FakeGateway(name=GATEWAY_ID, clock=clock)


@pytest.fixture
def env(
    db_url: str,
    clock: ManualClock,
    fake_gateway: FakeGateway,
    make_billkeep: Callable[..., Billkeep],
) -> WebhookEnv:
    billkeep = make_billkeep(db_url, fake_gateway)
    tenant_id, _key = billkeep.tenants.create_tenant("webhooks", clock.now_ms())
    endpoints = StaticWebhookEndpoints(
        [GatewayEndpoint(tenant_id, GATEWAY_ID, (SECRET, OLD_SECRET))]
    )
    service = WebhookService.create(billkeep.db, clock, endpoints)
    return WebhookEnv(billkeep, service, endpoints, tenant_id, clock)


@pytest.fixture
def client(env: WebhookEnv) -> Iterator[TestClient]:
    app = create_app(env.billkeep, ApiSettings(log_json=False, log_level="WARNING"))
    app.state.webhook_service = env.service
    with TestClient(app) as test_client:
        yield test_client
