"""Small, strict request validators shared by operations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from billkeep.domain.errors import FieldError, ValidationFailed

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_PAIRS",
    "MAX_METADATA_VALUE_LENGTH",
    "check_unknown_fields",
    "gather",
    "optional_string",
    "required_string",
    "validate_metadata",
]

MAX_METADATA_PAIRS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
MAX_DESCRIPTION_LENGTH = 1000
MAX_REFERENCE_LENGTH = 255


def check_unknown_fields(request: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise ValidationFailed([FieldError(name, "unknown field") for name in unknown])


def required_string(
    request: Mapping[str, Any], field: str, max_length: int = MAX_REFERENCE_LENGTH
) -> str:
    value = request.get(field)
    if not isinstance(value, str) or not value:
        raise ValidationFailed.single(field, "required, a non-empty string")
    if len(value) > max_length:
        raise ValidationFailed.single(field, f"at most {max_length} characters")
    return value


def optional_string(
    request: Mapping[str, Any], field: str, max_length: int = MAX_REFERENCE_LENGTH
) -> str | None:
    if request.get(field) is None:
        return None
    return required_string(request, field, max_length)


def validate_metadata(value: Any, field: str = "metadata") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed.single(field, "must be an object of string pairs")
    if len(value) > MAX_METADATA_PAIRS:
        raise ValidationFailed.single(field, f"at most {MAX_METADATA_PAIRS} pairs")
    for key, item in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_METADATA_KEY_LENGTH:
            raise ValidationFailed.single(
                field, f"keys are 1..{MAX_METADATA_KEY_LENGTH} characters"
            )
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE_LENGTH:
            raise ValidationFailed.single(
                f"{field}.{key}",
                f"values are strings of at most {MAX_METADATA_VALUE_LENGTH} characters",
            )
    return dict(value)


def gather(checks: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run every field check and report all failures together, not just the first."""
    errors: list[FieldError] = []
    result: dict[str, Any] = {}
    for field, check in checks.items():
        try:
            result[field] = check()
        except ValidationFailed as exc:
            errors.extend(exc.errors)
    if errors:
        raise ValidationFailed(errors)
    return result
