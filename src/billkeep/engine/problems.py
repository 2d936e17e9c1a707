"""RFC 9457 problem documents, shared by the engine (stored refusals) and the HTTP API."""

from __future__ import annotations

from typing import Any

from billkeep.domain.errors import BillkeepError

__all__ = ["problem", "problem_from_error"]


def problem(
    code: str, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:billkeep:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    return body


def problem_from_error(exc: BillkeepError) -> dict[str, Any]:
    errors = [{"field": e.field, "message": e.message} for e in exc.errors] or None
    return problem(exc.code, exc.status, exc.title, exc.detail, errors)
