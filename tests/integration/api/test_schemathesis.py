"""Property-based conformance: generated requests against the app's own OpenAPI document.

Checks: no 5xx, every status documented, content types and bodies match the documented schemas,
required response headers present. The app is first seeded with one resource of every kind
(`conformance_seed.py`) so lists render real items; a second test reads each of those resources
by its real id, since generated ids only ever meet 404s. Bounded examples keep it around a minute
on a loaded machine.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.case import Case
from schemathesis.schemas import BaseSchema
from tests.integration.api.conformance_seed import CHECKS, Seeded, prepare_app, seed
from tests.integration.api.conftest import Api

MAX_EXAMPLES_PER_OPERATION = 15
# Every tag of the API: each router's responses and statuses are documented precisely.
TESTED_TAGS = {
    "customers",
    "charges",
    "refunds",
    "commands",
    "ledger",
    "operations",
    "billing",
    "reconciliation",
    "gateways",
    "webhooks",
}


@pytest.fixture
def conformance_api(sqlite_url: str, make_api: Callable[..., Api]) -> Api:
    api = make_api(sqlite_url)
    prepare_app(api)
    return api


def _schema(api: Api) -> BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", api.client.app)


def _seeded(api: Api, schema: BaseSchema) -> Seeded:
    return seed(schema, api, api.customer())


def test_api_conforms_to_its_openapi(conformance_api: Api) -> None:
    schema = _schema(conformance_api)
    _seeded(conformance_api, schema)
    tested: list[str] = []
    untagged: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tags = set(operation.definition.raw.get("tags", []))
        if not tags:
            untagged.append(operation.label)
        if not TESTED_TAGS & tags:
            continue
        tested.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Case) -> None:
            case.call_and_validate(headers=conformance_api.auth, checks=CHECKS)

        check()
    assert untagged == [], "every route belongs to a tag (and the tag to TESTED_TAGS)"
    for label in (
        "POST /v1/charges",
        "GET /v1/commands/{command_id}",
        "POST /v1/reconciliations",
        "POST /v1/webhooks/{gateway_id}",
        "GET /v1/invoices",
        "POST /v1/gateways",
    ):
        assert label in tested


def test_real_resources_conform_to_its_openapi(conformance_api: Api) -> None:
    """Every `GET .../{id}` read with a real id answers 200 with a body matching its schema."""
    schema = _schema(conformance_api)
    seeded = _seeded(conformance_api, schema)
    gateway = conformance_api.post(
        "/v1/gateways",
        {"kind": "stripe", "api_key": "sk_test_conformance", "webhook_secret": "whsec_x"},
        "gw-1",
    )
    assert gateway.status_code == 201, gateway.text
    seeded.path_parameters["GET /v1/gateways/{gateway_id}"] = {"gateway_id": gateway.json()["id"]}
    read_by_id = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "GET" or "{" not in operation.path:
            continue
        read_by_id.append(operation.label)
        case = operation.Case(path_parameters=seeded.path_parameters[operation.label])
        response = case.call_and_validate(headers=conformance_api.auth, checks=CHECKS)
        assert response.status_code == 200, (operation.label, response.text)
    assert sorted(read_by_id) == sorted(seeded.path_parameters)
