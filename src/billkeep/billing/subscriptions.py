"""subscription.create and subscription.cancel, and the period arithmetic billing runs share.

A subscription's billing periods are anchored to its start (or trial end) by domain/periods.py.
`next_period_index` is the first period not yet invoiced; `next_period_end_ms` is when that period
becomes billable (NULL once nothing is left to bill), which is what billing runs scan.

Cancellation (documented choices):
- `at_period_end: true`: the subscription ends at the end of the current period (during a trial:
  at the trial end, so nothing is billed); that last period is invoiced in full.
- `at_period_end: false`: it ends now. The period in progress is truncated at now and invoiced for
  its usage only (flat fees are charged for complete periods only; there is no proration).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billkeep.billing.catalogue import load_plan
from billkeep.billing.views import current_period, subscription_view
from billkeep.domain.commands import CommandState
from billkeep.domain.errors import FieldError, NotFound, ValidationFailed
from billkeep.domain.ids import new_id
from billkeep.domain.periods import MAX_TIME_MS, billing_anchor_ms, period_bounds
from billkeep.domain.pricing import Plan
from billkeep.domain.usage import parse_rfc3339_ms
from billkeep.engine.operations.validation import required_string
from billkeep.engine.problems import problem
from billkeep.engine.steps import Finish, LocalStep, Step, StepContext, Transition
from billkeep.storage.tables.billing import subscriptions
from billkeep.storage.tables.core import customers

__all__ = [
    "CancelSubscription",
    "CreateSubscription",
    "billable_period",
    "load_subscription",
    "parse_time",
]


def billable_period(
    anchor_ms: int, plan: Plan, index: int, ended_at_ms: int | None
) -> tuple[int, int, bool] | None:
    """(start_ms, end_ms, complete) of period `index` as billed, or None if the subscription ended
    before it starts. `complete` is False for a period truncated by a cancellation."""
    start_ms, end_ms = period_bounds(anchor_ms, plan.interval, plan.interval_count, index)
    if ended_at_ms is None or ended_at_ms >= end_ms:
        return start_ms, end_ms, True
    if ended_at_ms <= start_ms:
        return None
    return start_ms, ended_at_ms, False


def _first_period_in_calendar(start_ms: int, plan: Plan) -> bool:
    """Whether the trial and the first period of a subscription starting at `start_ms` end inside
    the supported calendar (else creating it would fail on every resume instead of refusing it)."""
    try:
        billable_period(billing_anchor_ms(start_ms, plan.trial_days), plan, 0, None)
    except ValueError:
        return False
    return True


def load_subscription(
    conn: Connection, tenant_id: str, subscription_id: str, *, lock: bool = False
) -> Any:
    query = sa.select(subscriptions).where(
        subscriptions.c.tenant_id == tenant_id, subscriptions.c.id == subscription_id
    )
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no subscription {subscription_id}")
    return row


def parse_time(value: Any, field: str) -> int:
    parsed = parse_rfc3339_ms(value)
    if parsed is None:
        raise ValidationFailed.single(field, "must be an RFC 3339 date-time with an offset")
    if not 0 <= parsed <= MAX_TIME_MS:
        raise ValidationFailed.single(field, "is outside the supported calendar")
    return parsed


class CreateSubscription:
    name = "subscription.create"

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(request) - {"customer_id", "plan_id", "start_at"})
        errors = [FieldError(k, "unknown field") for k in unknown]
        result: dict[str, Any] = {}
        for field, parse in (
            ("customer_id", lambda: required_string(request, "customer_id")),
            ("plan_id", lambda: required_string(request, "plan_id")),
            (
                "start_at_ms",
                lambda: (
                    None
                    if request.get("start_at") is None
                    else parse_time(request["start_at"], "start_at")
                ),
            ),
        ):
            try:
                result[field] = parse()
            except ValidationFailed as exc:
                errors.extend(exc.errors)
        if errors:
            raise ValidationFailed(errors)
        return result

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        customer = conn.execute(
            sa.select(customers.c.id).where(
                customers.c.tenant_id == tenant_id, customers.c.id == request["customer_id"]
            )
        ).first()
        errors = [] if customer is not None else [FieldError("customer_id", "no such customer")]
        try:
            plan = load_plan(conn, tenant_id, request["plan_id"]).plan
        except NotFound:
            errors.append(FieldError("plan_id", "no such plan"))
        else:
            start_ms = request["start_at_ms"]
            if start_ms is not None and not _first_period_in_calendar(start_ms, plan):
                errors.append(
                    FieldError("start_at", "its trial or first period ends after the year 9999")
                )
        if errors:
            raise ValidationFailed(errors)

    def steps(self) -> Mapping[str, Step]:
        return {"started": LocalStep(self._create)}

    def _create(self, ctx: StepContext, conn: Connection) -> Transition:
        request, now_ms = ctx.request, ctx.now_ms()
        plan = load_plan(conn, ctx.tenant_id, request["plan_id"]).plan
        # Without start_at the subscription starts when the command first ran (stored in the
        # command's history), so a resumed command does not move it.
        start_ms = request["start_at_ms"] if request["start_at_ms"] is not None else now_ms
        anchor_ms = billing_anchor_ms(start_ms, plan.trial_days)
        first = billable_period(anchor_ms, plan, 0, None)
        assert first is not None
        subscription_id = new_id("sub", now_ms)
        conn.execute(
            subscriptions.insert().values(
                tenant_id=ctx.tenant_id,
                id=subscription_id,
                customer_id=request["customer_id"],
                plan_id=request["plan_id"],
                status="active",
                start_at_ms=start_ms,
                anchor_ms=anchor_ms,
                cancel_at_period_end=False,
                canceled_at_ms=None,
                ended_at_ms=None,
                next_period_index=0,
                next_period_end_ms=first[1],
                billing_error=None,
                command_id=ctx.command_id,
                created_at_ms=now_ms,
                updated_at_ms=now_ms,
            )
        )
        row = load_subscription(conn, ctx.tenant_id, subscription_id)
        return Finish(
            CommandState.SUCCEEDED,
            201,
            subscription_view(row, plan, now_ms),
            resource_id=subscription_id,
        )


class CancelSubscription:
    name = "subscription.cancel"

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(request) - {"subscription_id", "at_period_end"})
        errors = [FieldError(k, "unknown field") for k in unknown]
        at_period_end = request.get("at_period_end", False)
        if not isinstance(at_period_end, bool):
            errors.append(FieldError("at_period_end", "must be a boolean"))
        try:
            subscription_id = required_string(request, "subscription_id")
        except ValidationFailed as exc:
            errors.extend(exc.errors)
        if errors:
            raise ValidationFailed(errors)
        return {"subscription_id": subscription_id, "at_period_end": at_period_end}

    def precheck(self, conn: Connection, tenant_id: str, request: Mapping[str, Any]) -> None:
        load_subscription(conn, tenant_id, request["subscription_id"])  # NotFound: nothing recorded

    def steps(self) -> Mapping[str, Step]:
        return {"started": LocalStep(self._cancel)}

    def _cancel(self, ctx: StepContext, conn: Connection) -> Transition:
        now_ms = ctx.now_ms()
        row = load_subscription(conn, ctx.tenant_id, ctx.request["subscription_id"], lock=True)
        plan = load_plan(conn, ctx.tenant_id, row.plan_id).plan
        if row.canceled_at_ms is not None:
            body = problem(
                "subscription_canceled",
                409,
                "Subscription already canceled",
                f"subscription {row.id} was already canceled",
            )
            return Finish(CommandState.REJECTED, 409, body, detail="subscription_canceled")
        if ctx.request["at_period_end"]:
            ended_at_ms = max(current_period(row, plan, now_ms)[1], row.start_at_ms)
        else:
            ended_at_ms = max(now_ms, row.start_at_ms)
        nxt = billable_period(row.anchor_ms, plan, row.next_period_index, ended_at_ms)
        conn.execute(
            subscriptions.update()
            .where(subscriptions.c.tenant_id == ctx.tenant_id, subscriptions.c.id == row.id)
            .values(
                cancel_at_period_end=ctx.request["at_period_end"],
                canceled_at_ms=now_ms,
                ended_at_ms=ended_at_ms,
                next_period_end_ms=None if nxt is None else nxt[1],
                updated_at_ms=now_ms,
            )
        )
        row = load_subscription(conn, ctx.tenant_id, row.id)
        return Finish(
            CommandState.SUCCEEDED, 200, subscription_view(row, plan, now_ms), resource_id=row.id
        )
