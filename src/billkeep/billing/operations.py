"""The billing commands, to register on a Billkeep (`Billkeep(..., operations=billing_operations())`
or `billkeep.register(op)` for each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from billkeep.billing.catalogue import CreateMetric, CreatePlan
from billkeep.billing.config import BillingConfig
from billkeep.billing.runs import CreateBillingRun
from billkeep.billing.subscriptions import CancelSubscription, CreateSubscription
from billkeep.engine.steps import Operation

if TYPE_CHECKING:
    from billkeep.engine.service import Billkeep

__all__ = ["billing_operations", "register_billing"]


def billing_operations(config: BillingConfig | None = None) -> dict[str, Operation]:
    operations: list[Operation] = [
        CreateMetric(),
        CreatePlan(),
        CreateSubscription(),
        CancelSubscription(),
        CreateBillingRun(config),
    ]
    return {op.name: op for op in operations}


def register_billing(billkeep: Billkeep, config: BillingConfig | None = None) -> None:
    """Register the billing commands on a Billkeep (idempotent)."""
    for operation in billing_operations(config).values():
        billkeep.register(operation)
