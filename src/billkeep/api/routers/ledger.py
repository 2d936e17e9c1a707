"""The money ledger: accounts, journal entries and the trial balance (read only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from billkeep.api.deps import Engine, Tenant, json_response
from billkeep.api.models import Account, AccountList, JournalEntryList, TrialBalance
from billkeep.api.openapi import read_route
from billkeep.api.routers.customers import Cursor, Limit
from billkeep.engine.queries import DEFAULT_PAGE_LIMIT

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["ledger"])


@router.get("/accounts", **read_route(AccountList, summary="List accounts"))
def list_accounts(
    tenant_id: Tenant,
    billkeep: Engine,
    customer_id: Annotated[str | None, Query()] = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    return json_response(billkeep.queries.accounts(tenant_id, customer_id, limit, cursor).as_dict())


@router.get("/accounts/{account_id}", **read_route(Account, (404,), summary="Retrieve an account"))
def get_account(account_id: str, tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(billkeep.queries.account(tenant_id, account_id))


@router.get("/journal_entries", **read_route(JournalEntryList, summary="List journal entries"))
def list_journal_entries(
    tenant_id: Tenant,
    billkeep: Engine,
    account_id: Annotated[str | None, Query()] = None,
    resource_id: Annotated[str | None, Query()] = None,
    limit: Limit = DEFAULT_PAGE_LIMIT,
    cursor: Cursor = None,
) -> Response:
    page = billkeep.queries.journal_entries(tenant_id, account_id, resource_id, limit, cursor)
    return json_response(page.as_dict())


@router.get(
    "/ledger/trial_balance", **read_route(TrialBalance, summary="Posted totals per currency")
)
def trial_balance(tenant_id: Tenant, billkeep: Engine) -> Response:
    return json_response(billkeep.queries.trial_balance(tenant_id))
