"""`WebhookService`: what the HTTP route, the CLI and the worker use (inbox + processor)."""

from __future__ import annotations

from dataclasses import dataclass

from billkeep.domain.clock import Clock
from billkeep.storage.database import Database
from billkeep.webhooks.endpoints import StaticWebhookEndpoints, WebhookEndpoints
from billkeep.webhooks.fetch import GatewayObjects
from billkeep.webhooks.inbox import Received, receive
from billkeep.webhooks.limits import MAX_WEBHOOK_BODY_BYTES, SIGNATURE_TOLERANCE_S, WebhookConfig
from billkeep.webhooks.processor import WebhookProcessor

__all__ = ["UnknownGateway", "WebhookService"]


class UnknownGateway(LookupError):
    """No tenant configured this gateway id."""


@dataclass
class WebhookService:
    db: Database
    clock: Clock
    endpoints: WebhookEndpoints
    processor: WebhookProcessor
    tolerance_s: int = SIGNATURE_TOLERANCE_S
    max_body_bytes: int = MAX_WEBHOOK_BODY_BYTES

    @classmethod
    def create(
        cls,
        db: Database,
        clock: Clock,
        endpoints: WebhookEndpoints | None = None,
        *,
        config: WebhookConfig | None = None,
        objects: GatewayObjects | None = None,
    ) -> WebhookService:
        processor = WebhookProcessor(db, clock, config, objects)
        return cls(db, clock, endpoints or StaticWebhookEndpoints(), processor)

    def receive(self, gateway_id: str, body: bytes, signature_header: str) -> Received:
        """Verify and store (see inbox.receive); raises UnknownGateway for an unknown id."""
        endpoint = self.endpoints.lookup(gateway_id)
        if endpoint is None:
            raise UnknownGateway(gateway_id)
        return receive(
            self.db,
            endpoint,
            body,
            signature_header,
            self.clock.now_ms(),
            tolerance_s=self.tolerance_s,
            max_body_bytes=self.max_body_bytes,
        )

    def process_received(self, received: Received) -> None:
        """Run after the acknowledgement: a failure leaves the event due for the worker."""
        self.processor.process_event(received.tenant_id, received.id)
