"""HTTP conventions: auth, problem documents, request ids, body limits, idempotency headers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.integration.api.conftest import Api

from billkeep.api.settings import DEFAULT_MAX_BODY_BYTES
from billkeep.storage.tables.core import commands

PROBLEM = "application/problem+json"


def _assert_problem(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == PROBLEM  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["code"] == code and body["status"] == status
    assert body["type"] == f"urn:billkeep:problem:{code}"
    assert isinstance(body["title"], str) and isinstance(body["detail"], str)
    assert response.headers["request-id"]  # type: ignore[attr-defined]
    return dict(body)


def _command_count(api: Api) -> int:
    with api.billkeep.db.read() as conn:
        return len(conn.execute(commands.select()).all())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ],
)
def test_missing_or_wrong_key_is_401(sqlite_api: Api, headers: dict[str, str]) -> None:
    response = sqlite_api.client.get("/v1/charges", headers=headers)
    _assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401(sqlite_api: Api) -> None:
    [info] = sqlite_api.billkeep.tenants.list_keys(sqlite_api.tenant_id)
    assert sqlite_api.get("/v1/charges").status_code == 200
    sqlite_api.billkeep.tenants.revoke_key(sqlite_api.tenant_id, info.id, 1)
    _assert_problem(sqlite_api.get("/v1/charges"), 401, "unauthenticated")


def test_unauthenticated_post_records_nothing(sqlite_api: Api) -> None:
    response = sqlite_api.client.post("/v1/customers", json={}, headers={"Idempotency-Key": "k"})
    _assert_problem(response, 401, "unauthenticated")
    assert _command_count(sqlite_api) == 0


def test_framework_errors_are_problems(sqlite_api: Api) -> None:
    _assert_problem(sqlite_api.get("/v1/nothing-here"), 404, "not_found")
    response = sqlite_api.client.delete("/v1/charges", headers=sqlite_api.auth)
    _assert_problem(response, 405, "method_not_allowed")
    body = _assert_problem(sqlite_api.get("/v1/charges", limit=0), 422, "validation_error")
    assert body["errors"] == [
        {"field": "limit", "message": "Input should be greater than or equal to 1"}
    ]
    body = _assert_problem(sqlite_api.get("/v1/charges", limit="x"), 422, "validation_error")
    assert [e["field"] for e in body["errors"]] == ["limit"]  # type: ignore[union-attr]


def test_unexpected_exception_is_a_500_problem(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sqlite_api.billkeep.queries, "charges", explode)
    response = sqlite_api.get("/v1/charges")
    body = _assert_problem(response, 500, "internal_error")
    assert "boom" not in json.dumps(body), "internals are not leaked to clients"


def test_request_id_is_kept_when_sane_and_generated_otherwise(sqlite_api: Api) -> None:
    kept = sqlite_api.client.get("/healthz", headers={"Request-Id": "abc-123.x"})
    assert kept.headers["request-id"] == "abc-123.x"
    for bad in ("has space", "x" * 200, "semi;colon"):
        made = sqlite_api.client.get("/healthz", headers={"Request-Id": bad})
        assert made.headers["request-id"].startswith("req_")
    first = sqlite_api.client.get("/healthz").headers["request-id"]
    second = sqlite_api.client.get("/healthz").headers["request-id"]
    assert first != second


def test_idempotency_key_missing_and_invalid_are_400(sqlite_api: Api) -> None:
    body = {"email": "a@example.com"}
    _assert_problem(sqlite_api.post("/v1/customers", body, None), 400, "idempotency_key_missing")
    for bad in (b"", b"x" * 256, b"has space", b"tab\there", "caf\u00e9".encode()):
        response = sqlite_api.client.post(
            "/v1/customers",
            content=json.dumps(body).encode(),
            headers={**sqlite_api.auth, "Idempotency-Key": bad},  # type: ignore[dict-item]
        )
        _assert_problem(response, 400, "idempotency_key_invalid")
    assert sqlite_api.post("/v1/customers", body, "x" * 255).status_code == 201
    assert sqlite_api.post("/v1/customers", body, "!~").status_code == 201
    assert _command_count(sqlite_api) == 2


@pytest.mark.parametrize("raw", [b"{bad", b"", b"\xff\xfe", b"[1,2"])
def test_malformed_json_is_400_and_records_nothing(sqlite_api: Api, raw: bytes) -> None:
    response = sqlite_api.client.post(
        "/v1/customers", content=raw, headers={**sqlite_api.auth, "Idempotency-Key": "k"}
    )
    _assert_problem(response, 400, "invalid_json")
    assert _command_count(sqlite_api) == 0


def test_non_object_json_is_422(sqlite_api: Api) -> None:
    body = _assert_problem(sqlite_api.post("/v1/customers", [1, 2], "k"), 422, "validation_error")
    assert body["errors"] == [{"field": "body", "message": "must be a JSON object"}]


def test_body_over_limit_by_content_length_is_413(sqlite_api: Api) -> None:
    big = b'{"name": "' + b"x" * DEFAULT_MAX_BODY_BYTES + b'"}'
    response = sqlite_api.client.post(
        "/v1/customers", content=big, headers={**sqlite_api.auth, "Idempotency-Key": "k"}
    )
    _assert_problem(response, 413, "request_too_large")
    assert _command_count(sqlite_api) == 0


def test_streamed_body_over_limit_is_413(sqlite_api: Api) -> None:
    chunk = b"x" * 65536

    def body() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(DEFAULT_MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk
        yield b'"}'

    # A generator body is sent chunked: no Content-Length, so only counting can catch it.
    response = sqlite_api.client.post(
        "/v1/customers", content=body(), headers={**sqlite_api.auth, "Idempotency-Key": "k"}
    )
    _assert_problem(response, 413, "request_too_large")
    assert _command_count(sqlite_api) == 0


def test_body_just_under_limit_is_accepted_by_the_size_check(sqlite_api: Api) -> None:
    filler = "x" * (DEFAULT_MAX_BODY_BYTES - 100)
    response = sqlite_api.post("/v1/customers", {"name": filler}, "k")
    # The engine's own length rule refuses the name; the point is that it is not a 413.
    _assert_problem(response, 422, "validation_error")


def test_healthz_needs_no_auth(sqlite_api: Api) -> None:
    response = sqlite_api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_openapi_and_docs_are_served(sqlite_api: Api) -> None:
    document = sqlite_api.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for path in (
        "/v1/customers",
        "/v1/charges",
        "/v1/refunds",
        "/v1/commands/{command_id}",
        "/v1/accounts",
        "/v1/journal_entries",
        "/v1/ledger/trial_balance",
        "/healthz",
    ):
        assert path in document["paths"]
    charge_post = document["paths"]["/v1/charges"]["post"]
    assert {"201", "202", "402", "400", "409", "413", "422"} <= set(charge_post["responses"])
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert sqlite_api.client.get("/docs").status_code == 200
