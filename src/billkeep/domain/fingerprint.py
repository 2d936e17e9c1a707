"""Canonical JSON, request fingerprints and idempotency key rules."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from billkeep.domain.errors import IdempotencyKeyInvalid, IdempotencyKeyMissing

__all__ = [
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "canonical_json",
    "fingerprint",
    "validate_idempotency_key",
]

MAX_IDEMPOTENCY_KEY_LENGTH = 255
_VISIBLE_ASCII_MIN, _VISIBLE_ASCII_MAX = 0x21, 0x7E


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 kept: equal requests give equal text."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def fingerprint(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def validate_idempotency_key(key: str | None) -> str:
    """1..255 visible ASCII characters (0x21-0x7E), as the IETF draft and the API contract say."""
    if key is None:
        raise IdempotencyKeyMissing("send an Idempotency-Key header with every POST")
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    if any(not _VISIBLE_ASCII_MIN <= ord(ch) <= _VISIBLE_ASCII_MAX for ch in key):
        raise IdempotencyKeyInvalid("Idempotency-Key must contain only visible ASCII characters")
    return key
