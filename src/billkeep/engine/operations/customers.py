"""customer.create: one local phase. external_id is unique per tenant (a constraint decides)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from billkeep.domain.commands import CommandState
from billkeep.domain.errors import ValidationFailed
from billkeep.domain.ids import new_id
from billkeep.engine.operations.validation import (
    check_unknown_fields,
    optional_string,
    validate_metadata,
)
from billkeep.engine.problems import problem
from billkeep.engine.steps import Finish, LocalStep, Step, StepContext, Transition
from billkeep.engine.views import customer_view
from billkeep.storage.tables.core import customers

__all__ = ["CreateCustomer"]

MAX_EMAIL_LENGTH = 320
MAX_NAME_LENGTH = 200


class CreateCustomer:
    name = "customer.create"

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        check_unknown_fields(
            request, {"email", "name", "external_id", "payment_method", "metadata"}
        )
        email = optional_string(request, "email", MAX_EMAIL_LENGTH)
        if email is not None and "@" not in email:
            raise ValidationFailed.single("email", "must be an email address")
        return {
            "email": email,
            "name": optional_string(request, "name", MAX_NAME_LENGTH),
            "external_id": optional_string(request, "external_id"),
            "payment_method": optional_string(request, "payment_method"),
            "metadata": validate_metadata(request.get("metadata")),
        }

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        return None

    def steps(self) -> Mapping[str, Step]:
        return {"started": LocalStep(self._create)}

    def _create(self, ctx: StepContext, conn: Connection) -> Transition:
        request = ctx.request
        taken = _external_id_taken(request["external_id"])
        if request["external_id"] is not None:
            existing = conn.execute(
                sa.select(customers.c.id).where(
                    customers.c.tenant_id == ctx.tenant_id,
                    customers.c.external_id == request["external_id"],
                )
            ).first()
            if existing is not None:
                return taken
        customer_id = new_id("cus", ctx.now_ms())
        try:
            with conn.begin_nested():
                conn.execute(
                    customers.insert().values(
                        tenant_id=ctx.tenant_id,
                        id=customer_id,
                        email=request["email"],
                        name=request["name"],
                        external_id=request["external_id"],
                        payment_method=request["payment_method"],
                        metadata=json.dumps(request["metadata"], sort_keys=True),
                        command_id=ctx.command_id,
                        created_at_ms=ctx.now_ms(),
                    )
                )
        except IntegrityError:
            return taken  # a concurrent command won the unique (tenant_id, external_id)
        row = conn.execute(
            sa.select(customers).where(
                customers.c.tenant_id == ctx.tenant_id, customers.c.id == customer_id
            )
        ).one()
        return Finish(CommandState.SUCCEEDED, 201, customer_view(row), resource_id=customer_id)


def _external_id_taken(external_id: str | None) -> Finish:
    return Finish(
        CommandState.REJECTED,
        409,
        problem(
            "external_id_taken",
            409,
            "external_id is taken",
            f"a customer with external_id {external_id!r} exists",
        ),
        detail="external_id_taken",
    )
