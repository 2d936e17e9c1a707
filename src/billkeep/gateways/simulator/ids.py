"""Stripe-looking object ids that are unique per store and reproducible under a seed.

An id is `<prefix>_` + the store's sequence number in fixed-width base62 (so ids sort by creation
order, which list pagination relies on) + a keyed hash of (salt, prefix, sequence). The sequence is
persisted, so a restarted simulator never reissues an id, whatever its seed.
"""

from __future__ import annotations

import hashlib

__all__ = ["ID_CHARS", "make_id", "sequence_of"]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # ASCII order
_SEQUENCE_CHARS = 10
_HASH_CHARS = 14
ID_CHARS = _SEQUENCE_CHARS + _HASH_CHARS  # 24, as Stripe's


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    assert value == 0, "sequence exceeds the id width"
    return "".join(reversed(digits))


def make_id(prefix: str, sequence: int, salt: str) -> str:
    digest = hashlib.sha256(f"{salt}:{prefix}:{sequence}".encode()).digest()
    suffix = _base62(int.from_bytes(digest[:12], "big") % 62**_HASH_CHARS, _HASH_CHARS)
    return f"{prefix}_{_base62(sequence, _SEQUENCE_CHARS)}{suffix}"


def sequence_of(object_id: str) -> int | None:
    """The sequence number inside an id this simulator made, or None for a foreign id."""
    _, sep, body = object_id.partition("_")
    if not sep or len(body) != ID_CHARS:
        return None
    value = 0
    for char in body[:_SEQUENCE_CHARS]:
        index = _BASE62.find(char)
        if index < 0:
            return None
        value = value * 62 + index
    return value
