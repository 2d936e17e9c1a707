"""Property-based conformance: generated requests against the app's own OpenAPI document.

Checks: no 5xx, every status documented, content types and bodies match the documented schemas,
required response headers present. Bounded examples keep it well under a minute.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.generation.case import Case
from tests.integration.api.conftest import Api

MAX_EXAMPLES_PER_OPERATION = 15
# The operations of the core API (this module's scope); other areas' routers add their tags here
# once they conform.
TESTED_TAGS = {"customers", "charges", "refunds", "commands", "ledger", "operations"}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture
def conformance_api(sqlite_url: str, make_api: Callable[..., Api]) -> Api:
    api = make_api(sqlite_url)
    api.customer()  # so that lists and ledger reads have something to render
    return api


def test_api_conforms_to_its_openapi(conformance_api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", conformance_api.client.app)
    tested: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not TESTED_TAGS & set(operation.definition.raw.get("tags", [])):
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
    assert "POST /v1/charges" in tested and "GET /v1/commands/{command_id}" in tested
