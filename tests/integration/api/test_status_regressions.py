"""Requests found, while documenting every status of the billing and reconciliation routes, to
record a command that then failed on every resume (a 500, or a 404 leaving it running); each is
now refused before anything is recorded."""

from __future__ import annotations

import sqlalchemy as sa
from tests.integration.api.conftest import Api

from billkeep.reconciliation.operation import OPERATION
from billkeep.reconciliation.wiring import enable_reconciliation
from billkeep.storage.tables.reconciliation import reconciliation_runs


def _commands(api: Api) -> int:
    return len(api.get("/v1/commands", limit=100).json()["data"])


def test_reconciliation_window_outside_the_calendar_is_refused(sqlite_api: Api) -> None:
    enable_reconciliation(sqlite_api.billkeep)
    assert OPERATION in sqlite_api.billkeep.executor.operations
    before = _commands(sqlite_api)
    for key, start, end in (
        # Year 1 parsed, then rendered back as "1-01-01T..." which nothing parses.
        ("year-1", "0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z"),
        # In year 9999 locally, but past the end of 9999 in UTC.
        ("past-9999", "9999-12-31T22:00:00Z", "9999-12-31T23:59:59-23:00"),
    ):
        response = sqlite_api.post("/v1/reconciliations", {"from": start, "to": end}, key)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert any("calendar" in error["message"] for error in problem["errors"]), problem
    assert _commands(sqlite_api) == before


def test_subscription_whose_first_period_ends_after_9999_is_refused(sqlite_api: Api) -> None:
    customer_id = sqlite_api.customer()
    plan = sqlite_api.post(
        "/v1/plans",
        {
            "code": "monthly",
            "name": "Monthly",
            "currency": "usd",
            "interval": "month",
            "trial_days": 30,
            "prices": [{"type": "flat", "amount": 1000}],
        },
        "plan-1",
    )
    assert plan.status_code == 201, plan.text
    before = _commands(sqlite_api)
    for key, start_at in (
        ("trial-end", "9999-12-31T00:00:00Z"),
        ("period-end", "9999-11-20T00:00:00Z"),
    ):
        response = sqlite_api.post(
            "/v1/subscriptions",
            {"customer_id": customer_id, "plan_id": plan.json()["id"], "start_at": start_at},
            key,
        )
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["start_at"]
    assert _commands(sqlite_api) == before
    # The last start whose trial and first period both end inside 9999 is still accepted.
    accepted = sqlite_api.post(
        "/v1/subscriptions",
        {
            "customer_id": customer_id,
            "plan_id": plan.json()["id"],
            "start_at": "9999-10-01T00:00:00Z",
        },
        "ok",
    )
    assert accepted.status_code == 201, accepted.text


def test_reconciliation_with_no_such_gateway_records_nothing(sqlite_api: Api) -> None:
    # Sources from the gateway configuration store, where this tenant has configured none: its
    # default is the built-in test gateway, which has no records to reconcile against.
    enable_reconciliation(sqlite_api.billkeep)
    before = _commands(sqlite_api)
    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    for key, body in (("unknown", {"gateway_id": "gw_nope", **window}), ("default", window)):
        for _attempt in range(2):  # the retry is refused the same way, not 409 key in use
            response = sqlite_api.post("/v1/reconciliations", body, key)
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "resource_missing"
    assert _commands(sqlite_api) == before
    runs = sqlite_api.billkeep.db.run_read(
        lambda conn: conn.execute(
            sa.select(sa.func.count()).select_from(reconciliation_runs)
        ).scalar_one()
    )
    assert runs == 0
