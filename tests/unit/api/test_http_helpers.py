"""Pure helpers of the HTTP layer: Prefer parsing, HTTP dates, problem detection, routers."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import pytest

from billkeep.api.deps import _is_problem, http_date, prefer_wait_ms
from billkeep.api.routers import ROUTER_MODULES, load_routers
from billkeep.api.settings import ApiSettings


def _request(max_wait_s: int = 10) -> object:
    settings = ApiSettings(max_prefer_wait_s=max_wait_s)
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=settings)))


@pytest.mark.parametrize(
    ("header", "expected_ms"),
    [
        (None, 0),
        ("wait=3", 3000),
        ("respond-async, wait=5", 5000),
        ("WAIT = 2", 2000),
        ('wait="4"', 4000),
        ("wait=60", 10_000),  # capped at 10 s by the contract
        ("wait=abc", 0),  # unparseable preferences are ignored (RFC 7240)
        ("handling=strict", 0),
        ("nowait=5", 0),
    ],
)
def test_prefer_wait(header: str | None, expected_ms: int) -> None:
    assert prefer_wait_ms(_request(), header) == expected_ms  # type: ignore[arg-type]


def test_prefer_wait_cap_follows_settings() -> None:
    assert prefer_wait_ms(_request(max_wait_s=2), "wait=9") == 2000  # type: ignore[arg-type]


def test_http_date_is_rfc7231() -> None:
    text = http_date(1_767_225_600_000)
    assert text == "Thu, 01 Jan 2026 00:00:00 GMT"
    assert int(parsedate_to_datetime(text).timestamp() * 1000) == 1_767_225_600_000


def test_problem_detection_uses_the_top_level_type() -> None:
    problem = '{"code":"x","detail":"d","status":409,"title":"t","type":"urn:billkeep:problem:x"}'
    assert _is_problem(409, problem)
    # A failed charge (402) whose metadata mimics a problem is still a charge.
    charge = '{"metadata":{"type":"urn:billkeep:problem:x"},"object":"charge"}'
    assert not _is_problem(402, charge)
    assert not _is_problem(201, problem)


def test_router_list_loads_existing_modules_and_skips_missing_ones() -> None:
    routers = load_routers()
    assert len(routers) <= len(ROUTER_MODULES)
    paths = {route.path for router in routers for route in router.routes}  # type: ignore[attr-defined]
    assert {"/v1/charges", "/v1/customers", "/healthz"} <= paths
