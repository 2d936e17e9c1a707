"""The catalogue: billable metrics and plans. Both are immutable once created (no update exists):
an invoice is always priced with the plan its subscription was created on; a new plan (new code)
replaces an old one for new subscriptions. Because they never change, loaded definitions are
cached per process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from billkeep.billing.views import metric_view, plan_view
from billkeep.domain.commands import CommandState
from billkeep.domain.errors import FieldError, NotFound, ValidationFailed
from billkeep.domain.fingerprint import canonical_json
from billkeep.domain.ids import new_id
from billkeep.domain.metrics import MetricDefinition, parse_metric
from billkeep.domain.pricing import Plan, parse_plan, price_metric
from billkeep.engine.problems import problem
from billkeep.engine.steps import Finish, LocalStep, Step, StepContext, Transition
from billkeep.storage.tables.billing import metrics, plans

__all__ = [
    "CreateMetric",
    "CreatePlan",
    "PlanRecord",
    "load_metrics",
    "load_plan",
]

MAX_CACHED_PLANS = 10_000


class PlanRecord:
    """A stored plan: its id and parsed definition."""

    __slots__ = ("currency", "id", "plan")

    def __init__(self, plan_id: str, plan: Plan) -> None:
        self.id = plan_id
        self.plan = plan
        self.currency = plan.currency


_plan_cache: dict[tuple[str, str], PlanRecord] = {}
_metric_cache: dict[tuple[str, str], MetricDefinition] = {}
_cache_lock = threading.Lock()


def load_plan(conn: Connection, tenant_id: str, plan_id: str) -> PlanRecord:
    key = (tenant_id, plan_id)
    cached = _plan_cache.get(key)
    if cached is not None:
        return cached
    row = conn.execute(
        sa.select(plans.c.definition).where(plans.c.tenant_id == tenant_id, plans.c.id == plan_id)
    ).first()
    if row is None:
        raise NotFound(f"no plan {plan_id}")
    record = PlanRecord(plan_id, parse_plan(json.loads(row.definition)))
    with _cache_lock:
        if len(_plan_cache) >= MAX_CACHED_PLANS:
            _plan_cache.clear()
        _plan_cache[key] = record
    return record


def load_metrics(
    conn: Connection, tenant_id: str, codes: Iterable[str]
) -> dict[str, MetricDefinition]:
    """Definitions of the given metric codes that exist (one query for the uncached ones)."""
    wanted = set(codes)
    found = {c: _metric_cache[(tenant_id, c)] for c in wanted if (tenant_id, c) in _metric_cache}
    missing = wanted - set(found)
    if missing:
        rows = conn.execute(
            sa.select(
                metrics.c.code, metrics.c.name, metrics.c.aggregation, metrics.c.property
            ).where(metrics.c.tenant_id == tenant_id, metrics.c.code.in_(sorted(missing)))
        ).all()
        with _cache_lock:
            for row in rows:
                definition = MetricDefinition(row.code, row.name, row.aggregation, row.property)
                _metric_cache[(tenant_id, row.code)] = definition
                found[row.code] = definition
    return found


def _taken(code: str, what: str, value: str) -> Finish:
    return Finish(
        CommandState.REJECTED,
        409,
        problem(code, 409, f"{what} code is taken", f"a {what} with code {value!r} exists"),
        detail=code,
    )


class CreateMetric:
    name = "metric.create"

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(request) - {"code", "name", "aggregation", "property"})
        if unknown:
            raise ValidationFailed([FieldError(k, "unknown field") for k in unknown])
        return asdict(parse_metric(request))

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        return None

    def steps(self) -> Mapping[str, Step]:
        return {"started": LocalStep(self._create)}

    def _create(self, ctx: StepContext, conn: Connection) -> Transition:
        request, now_ms = ctx.request, ctx.now_ms()
        metric_id = new_id("met", now_ms)
        try:
            with conn.begin_nested():
                conn.execute(
                    metrics.insert().values(
                        tenant_id=ctx.tenant_id,
                        id=metric_id,
                        code=request["code"],
                        name=request["name"],
                        aggregation=request["aggregation"],
                        property=request["property"],
                        command_id=ctx.command_id,
                        created_at_ms=now_ms,
                    )
                )
        except IntegrityError:  # the unique (tenant_id, code) decided
            return _taken("metric_code_taken", "metric", request["code"])
        row = conn.execute(
            sa.select(metrics).where(
                metrics.c.tenant_id == ctx.tenant_id, metrics.c.id == metric_id
            )
        ).one()
        return Finish(CommandState.SUCCEEDED, 201, metric_view(row), resource_id=metric_id)


class CreatePlan:
    name = "plan.create"

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        plan = parse_plan(request)
        canonical = json.loads(canonical_json(dict(request)))
        canonical["interval_count"] = plan.interval_count
        canonical["trial_days"] = plan.trial_days
        return dict(canonical)

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        plan = parse_plan(request)
        used = {m for m in (price_metric(p) for p in plan.prices) if m is not None}
        known = load_metrics(conn, tenant_id, used)
        errors = [
            FieldError(f"prices[{index}].metric", "no such metric")
            for index, price in enumerate(plan.prices)
            if (metric := price_metric(price)) is not None and metric not in known
        ]
        if errors:
            raise ValidationFailed(errors)

    def steps(self) -> Mapping[str, Step]:
        return {"started": LocalStep(self._create)}

    def _create(self, ctx: StepContext, conn: Connection) -> Transition:
        request, now_ms = ctx.request, ctx.now_ms()
        plan = parse_plan(request)
        plan_id = new_id("plan", now_ms)
        try:
            with conn.begin_nested():
                conn.execute(
                    plans.insert().values(
                        tenant_id=ctx.tenant_id,
                        id=plan_id,
                        code=plan.code,
                        name=plan.name,
                        currency=plan.currency,
                        interval=plan.interval,
                        interval_count=plan.interval_count,
                        trial_days=plan.trial_days,
                        definition=canonical_json(dict(request)),
                        command_id=ctx.command_id,
                        created_at_ms=now_ms,
                    )
                )
        except IntegrityError:
            return _taken("plan_code_taken", "plan", plan.code)
        row = conn.execute(
            sa.select(plans).where(plans.c.tenant_id == ctx.tenant_id, plans.c.id == plan_id)
        ).one()
        return Finish(CommandState.SUCCEEDED, 201, plan_view(row), resource_id=plan_id)
