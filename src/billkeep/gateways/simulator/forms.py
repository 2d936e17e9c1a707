"""Stripe's form encoding: `metadata[k]=v`, `created[gte]=1`, `expand[]=x` -> nested values.

Stripe rejects what it does not know, and so does the simulator: a parameter nobody reads would be
a silent divergence between what billkeep believes it sent and what the gateway did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl

from billkeep.gateways.simulator.errors import invalid_request, parameter_unknown
from billkeep.gateways.simulator.limits import (
    DEFAULT_LIST_LIMIT,
    MAX_AMOUNT,
    MAX_LIST_LIMIT,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    MAX_STRING_CHARS,
)

__all__ = ["Form", "FormValue", "ParamReader", "TimeRange", "parse_form"]

FormValue = str | dict[str, "FormValue"] | list["FormValue"]
Form = dict[str, FormValue]

_KEY_PATTERN = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT_PATTERN = re.compile(r"\[([^\[\]]*)\]")
_MAX_NESTING = 4


def _segments(raw_key: str) -> list[str]:
    match = _KEY_PATTERN.match(raw_key)
    if match is None:
        raise invalid_request(f"Invalid parameter name: {raw_key}", param=raw_key)
    parts = [match.group(1), *_SEGMENT_PATTERN.findall(match.group(2))]
    if len(parts) > _MAX_NESTING:
        raise invalid_request(f"Parameter nested too deeply: {raw_key}", param=raw_key)
    return parts


def _assign(form: Form, raw_key: str, value: str) -> None:
    parts = _segments(raw_key)
    node: Form = form
    for index, part in enumerate(parts[:-1]):
        if parts[index + 1] == "":
            # `a[]=x` appends; a list is always the last level in the parameters we accept.
            existing = node.setdefault(part, [])
            if not isinstance(existing, list) or index + 2 != len(parts):
                raise invalid_request(f"Invalid array parameter: {raw_key}", param=raw_key)
            existing.append(value)
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise invalid_request(f"Conflicting parameter: {raw_key}", param=raw_key)
        node = child
    last = parts[-1]
    if last in node:
        raise invalid_request(f"Parameter given more than once: {raw_key}", param=raw_key)
    node[last] = value


def parse_form(encoded: str) -> Form:
    """Decode an `application/x-www-form-urlencoded` body or query string into nested values."""
    form: Form = {}
    try:
        pairs = parse_qsl(
            encoded, keep_blank_values=True, strict_parsing=False, max_num_fields=1000
        )
    except ValueError as exc:
        raise invalid_request(f"Malformed form body: {exc}") from exc
    for key, value in pairs:
        _assign(form, key, value)
    return form


class TimeRange:
    """`created=N` or `created[gt|gte|lt|lte]=N`, in Unix seconds, as half-open bounds."""

    def __init__(self, gte_s: int | None = None, lt_s: int | None = None) -> None:
        self.gte_s = gte_s
        self.lt_s = lt_s


class ParamReader:
    """Reads typed parameters out of a form and refuses any parameter left unread."""

    def __init__(self, form: Form, prefix: str = "") -> None:
        self._form = form
        self._prefix = prefix
        self._read: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self._prefix}[{key}]" if self._prefix else key

    def _take(self, key: str) -> FormValue | None:
        self._read.add(key)
        return self._form.get(key)

    def _scalar(self, key: str) -> str | None:
        value = self._take(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid_request(f"Invalid value for {self._name(key)}", param=self._name(key))
        return value

    def string(
        self, key: str, *, required: bool = False, max_chars: int = MAX_STRING_CHARS
    ) -> str | None:
        value = self._scalar(key)
        if value is None or value == "":
            if required:
                raise invalid_request(
                    f"Missing required param: {self._name(key)}.",
                    code="parameter_missing",
                    param=self._name(key),
                )
            return None
        if len(value) > max_chars:
            raise invalid_request(
                f"{self._name(key)} is longer than {max_chars} characters", param=self._name(key)
            )
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key, required=True)
        assert value is not None
        return value

    def integer(
        self, key: str, *, minimum: int, maximum: int, required: bool = False
    ) -> int | None:
        raw = self.string(key, required=required)
        if raw is None:
            return None
        if not re.fullmatch(r"-?[0-9]{1,18}", raw):
            raise invalid_request(
                f"Invalid integer: {raw}", code="parameter_invalid_integer", param=self._name(key)
            )
        value = int(raw)
        if not minimum <= value <= maximum:
            raise invalid_request(
                f"{self._name(key)} must be between {minimum} and {maximum}",
                code="parameter_invalid_integer",
                param=self._name(key),
            )
        return value

    def amount(self, key: str = "amount", *, required: bool = True) -> int | None:
        return self.integer(key, minimum=1, maximum=MAX_AMOUNT, required=required)

    def boolean(self, key: str) -> bool | None:
        raw = self.string(key)
        if raw is None:
            return None
        if raw not in ("true", "false"):
            raise invalid_request(f"Invalid boolean: {raw}", param=self._name(key))
        return raw == "true"

    def currency(self, key: str = "currency") -> str:
        raw = self.required_string(key).lower()
        if not re.fullmatch(r"[a-z]{3}", raw):
            raise invalid_request(
                f"Invalid currency: {raw}", code="parameter_invalid_string", param=self._name(key)
            )
        return raw

    def metadata(self, key: str = "metadata") -> dict[str, str]:
        value = self._take(key)
        if value is None or value == "":
            return {}
        if not isinstance(value, dict):
            raise invalid_request("Invalid metadata: must be a hash", param=key)
        metadata: dict[str, str] = {}
        for meta_key, meta_value in value.items():
            if not isinstance(meta_value, str) or len(meta_key) > MAX_METADATA_KEY_CHARS:
                raise invalid_request(f"Invalid metadata[{meta_key}]", param=f"{key}[{meta_key}]")
            if len(meta_value) > MAX_METADATA_VALUE_CHARS:
                raise invalid_request(
                    f"metadata[{meta_key}] is longer than {MAX_METADATA_VALUE_CHARS} characters",
                    param=f"{key}[{meta_key}]",
                )
            if meta_value != "":  # Stripe: an empty value unsets the key
                metadata[meta_key] = meta_value
        if len(metadata) > MAX_METADATA_KEYS:
            raise invalid_request(f"metadata has more than {MAX_METADATA_KEYS} keys", param=key)
        return metadata

    def limit(self) -> int:
        value = self.integer("limit", minimum=1, maximum=MAX_LIST_LIMIT)
        return DEFAULT_LIST_LIMIT if value is None else value

    def time_range(self, key: str = "created") -> TimeRange:
        value = self._take(key)
        if value is None:
            return TimeRange()
        if isinstance(value, str):
            exact = ParamReader({key: value}, self._prefix).integer(key, minimum=0, maximum=2**40)
            assert exact is not None
            return TimeRange(exact, exact + 1)
        if not isinstance(value, dict):
            raise invalid_request(f"Invalid {key}", param=key)
        inner = ParamReader(value, key)
        bounds = {
            op: inner.integer(op, minimum=0, maximum=2**40) for op in ("gt", "gte", "lt", "lte")
        }
        inner.reject_unknown()
        gte_candidates = [b for b in (bounds["gte"], _plus_one(bounds["gt"])) if b is not None]
        lt_candidates = [b for b in (bounds["lt"], _plus_one(bounds["lte"])) if b is not None]
        return TimeRange(
            max(gte_candidates) if gte_candidates else None,
            min(lt_candidates) if lt_candidates else None,
        )

    def ignore(self, *keys: str) -> None:
        """Mark parameters as read on purpose (e.g. accepted and meaningless to a simulator)."""
        self._read.update(keys)

    def reject_unknown(self, allowed: Iterable[str] = ()) -> None:
        known = self._read | set(allowed)
        for key in self._form:
            if key not in known:
                raise parameter_unknown(self._name(key))


def _plus_one(value: int | None) -> int | None:
    return None if value is None else value + 1
