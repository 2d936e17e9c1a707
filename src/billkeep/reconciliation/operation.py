"""`reconciliation.create`: a reconciliation run as an engine command, so `POST
/v1/reconciliations` is idempotent like every POST and a crashed run resumes.

Recovery points:
- `started`: validate the window, record the run (status running) -> `run_recorded`.
- `run_recorded`: execute the run (gateway reads, staging, merge, heals, breaks: each in its own
  transaction, all idempotent; a resumed run starts its window over), then finish with the run
  resource (201).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from billkeep.domain.clock import ms_to_rfc3339, rfc3339_to_ms
from billkeep.domain.commands import CommandState
from billkeep.domain.errors import FieldError, ValidationFailed
from billkeep.domain.periods import MAX_TIME_MS, MIN_TIME_MS
from billkeep.engine.command_store import check_fence
from billkeep.engine.operations.validation import check_unknown_fields
from billkeep.engine.steps import (
    Advance,
    Finish,
    ForeignStep,
    LocalStep,
    Step,
    StepContext,
    Transition,
)
from billkeep.gateways.protocol import GatewayDirectory
from billkeep.reconciliation.runner import ReconciliationConfig, ReconciliationRunner
from billkeep.reconciliation.sources import SourceFactory
from billkeep.reconciliation.views import get_run

__all__ = ["OPERATION", "CreateReconciliation", "install"]

OPERATION = "reconciliation.create"


def _parse_time(request: Mapping[str, Any], field: str, errors: list[FieldError]) -> int | None:
    value = request.get(field)
    if not isinstance(value, str):
        errors.append(FieldError(field, "required: an RFC 3339 time"))
        return None
    try:
        parsed = rfc3339_to_ms(value)
    except ValueError as exc:
        errors.append(FieldError(field, f"not an RFC 3339 time: {exc}"))
        return None
    # Outside it the canonical request cannot be written back as RFC 3339 (a year-1 time renders
    # as "1-01-01..."), and the recorded command then failed on every resume.
    if not MIN_TIME_MS <= parsed <= MAX_TIME_MS:
        errors.append(FieldError(field, "is outside the supported calendar (1970..9999)"))
        return None
    return parsed


class CreateReconciliation:
    name = OPERATION

    def __init__(
        self,
        sources: SourceFactory,
        config: ReconciliationConfig | None = None,
        gateways: GatewayDirectory | None = None,
    ) -> None:
        self.sources = sources
        self.config = config or ReconciliationConfig()
        self.gateways = gateways  # to name the tenant's default gateway before recording

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        check_unknown_fields(request, {"gateway_id", "from", "to"})
        errors: list[FieldError] = []
        from_ms = _parse_time(request, "from", errors)
        to_ms = _parse_time(request, "to", errors)
        gateway_id = request.get("gateway_id")
        if gateway_id is not None and (not isinstance(gateway_id, str) or not gateway_id):
            errors.append(FieldError("gateway_id", "must be a gateway id"))
        if from_ms is not None and to_ms is not None:
            if to_ms <= from_ms:
                errors.append(FieldError("to", "must be after from"))
            elif to_ms - from_ms > self.config.max_window_ms:
                errors.append(
                    FieldError("to", f"window over {self.config.max_window_ms} ms: split it")
                )
        if errors:
            raise ValidationFailed(errors)
        assert from_ms is not None and to_ms is not None
        # Canonical: the same window written differently is the same request.
        return {
            "gateway_id": gateway_id,
            "from": ms_to_rfc3339(from_ms),
            "to": ms_to_rfc3339(to_ms),
        }

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        """No such gateway (or no configured default): 404 with nothing recorded. Found only
        later, in the run step, the NotFound left the command running and its run row
        `running` for ever, every retry and worker pass failing the same way."""
        gateway_id = request["gateway_id"]
        if gateway_id is None and self.gateways is not None:
            gateway_id = self.gateways.default_gateway_id(tenant_id, conn)
        if gateway_id is not None:
            self.sources(tenant_id, gateway_id)  # raises NotFound

    def steps(self) -> Mapping[str, Step]:
        return {
            "started": LocalStep(self._record),
            "run_recorded": ForeignStep(self._execute, self._finish),
        }

    def _runner(self, ctx: StepContext) -> ReconciliationRunner:
        return ReconciliationRunner(ctx.services.db, ctx.services.clock, self.config)

    def _record(self, ctx: StepContext, conn: Connection) -> Transition:
        request = ctx.request
        gateway_id = request["gateway_id"] or ctx.services.gateways.default_gateway_id(
            ctx.tenant_id
        )
        run_id = self._runner(ctx).create_run(
            conn,
            ctx.tenant_id,
            gateway_id,
            rfc3339_to_ms(request["from"]),
            rfc3339_to_ms(request["to"]),
            command_id=ctx.command_id,
        )
        return Advance("run_recorded", detail="run recorded", resource_id=run_id)

    def _execute(self, ctx: StepContext) -> dict[str, Any]:
        assert ctx.resource_id is not None
        run = get_run(ctx.services.db, ctx.tenant_id, ctx.resource_id)
        source = self.sources(ctx.tenant_id, run["gateway_id"])

        def fence(conn: Connection) -> None:
            # A run can outlive its command's lease (a long gateway listing); once a worker took
            # the lease over, this execution's writes are refused (LeaseLost), never interleaved.
            check_fence(conn, ctx.tenant_id, ctx.command_id, ctx.fencing_token)

        return self._runner(ctx).run(ctx.tenant_id, ctx.resource_id, source, fence=fence)

    def _finish(self, ctx: StepContext, conn: Connection, summary: dict[str, Any]) -> Transition:
        assert ctx.resource_id is not None
        view = get_run(ctx.services.db, ctx.tenant_id, ctx.resource_id)
        return Finish(CommandState.SUCCEEDED, 201, view, ctx.resource_id, "reconciled")


def install(
    billkeep: Any, sources: SourceFactory, config: ReconciliationConfig | None = None
) -> None:
    """Register `reconciliation.create` on a Billkeep (idempotent)."""
    billkeep.register(CreateReconciliation(sources, config, billkeep.services.gateways))
