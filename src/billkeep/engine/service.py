"""`Billkeep`: the library's front door. The HTTP API, the CLI and the worker all use it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billkeep.domain.clock import Clock, SystemClock
from billkeep.engine.executor import CommandResult, Executor
from billkeep.engine.operations.charges import CreateCharge
from billkeep.engine.operations.customers import CreateCustomer
from billkeep.engine.operations.refunds import CreateRefund
from billkeep.engine.queries import Queries
from billkeep.engine.steps import EngineConfig, EngineServices, Operation
from billkeep.engine.tenants import TenantStore
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import GatewayDirectory, PaymentGateway, StaticGatewayDirectory
from billkeep.storage.database import Database, database_url_from_env
from billkeep.storage.migrate import upgrade_to_head

__all__ = ["Billkeep", "core_operations"]


def core_operations() -> dict[str, Operation]:
    operations: list[Operation] = [CreateCustomer(), CreateCharge(), CreateRefund()]
    from billkeep.billing.operations import billing_operations  # billing builds on the engine

    return {op.name: op for op in operations} | billing_operations()


class Billkeep:
    """One engine over one database. Thread-safe; share one per process."""

    def __init__(
        self,
        db: Database,
        gateways: GatewayDirectory,
        *,
        clock: Clock | None = None,
        config: EngineConfig | None = None,
        operations: Mapping[str, Operation] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.services = EngineServices(db, self.clock, gateways, config or EngineConfig())
        ops = dict(core_operations())
        ops.update(operations or {})
        self.executor = Executor(self.services, ops)
        self.queries = Queries(db)
        self.tenants = TenantStore(db)

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        gateway: PaymentGateway | None = None,
        migrate: bool = True,
        clock: Clock | None = None,
        config: EngineConfig | None = None,
    ) -> Billkeep:
        """Open a database (default: BILLKEEP_DATABASE_URL or ./billkeep.db), migrating it."""
        db = Database(url or database_url_from_env())
        if migrate:
            upgrade_to_head(db)
        directory = StaticGatewayDirectory(gateway or FakeGateway(clock=clock))
        return cls(db, directory, clock=clock, config=config)

    def register(self, operation: Operation) -> None:
        self.executor.operations[operation.name] = operation

    def execute(
        self,
        tenant_id: str,
        operation: str,
        request: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        business_key: str | None = None,
        wait_ms: int = 0,
        actor: str | None = None,
    ) -> CommandResult:
        return self.executor.execute(
            tenant_id,
            operation,
            request,
            idempotency_key=idempotency_key,
            business_key=business_key,
            wait_ms=wait_ms,
            actor=actor,
        )

    # Convenience wrappers for library users.
    def create_customer(
        self, tenant_id: str, request: Mapping[str, Any], idempotency_key: str
    ) -> CommandResult:
        return self.execute(tenant_id, "customer.create", request, idempotency_key=idempotency_key)

    def create_charge(
        self, tenant_id: str, request: Mapping[str, Any], idempotency_key: str
    ) -> CommandResult:
        return self.execute(tenant_id, "charge.create", request, idempotency_key=idempotency_key)

    def create_refund(
        self, tenant_id: str, request: Mapping[str, Any], idempotency_key: str
    ) -> CommandResult:
        return self.execute(tenant_id, "refund.create", request, idempotency_key=idempotency_key)

    def close(self) -> None:
        self.db.dispose()
