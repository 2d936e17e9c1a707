"""Identifiers that need no central sequence: a type prefix plus a ULID.

A ULID is 48 bits of milliseconds since the epoch and 80 random bits in Crockford base32, so ids
sort by creation time (useful for cursors and for B-tree locality) and two machines never need to
agree on the next number.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

__all__ = ["ID_PREFIXES", "is_id", "new_id", "set_random_source", "ulid"]

ID_PREFIXES = frozenset(
    {
        "cus",
        "ch",
        "re",
        "cmd",
        "acct",
        "je",
        "plan",
        "sub",
        "inv",
        "run",
        "rec",
        "brk",
        "gw",
        "ten",
        "key",
        "evt",
        "met",
        "att",
        "use",
        "wh",
    }
)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_LENGTH = 26
_ID_PATTERN = re.compile(r"^([a-z]+)_([0-9A-HJKMNP-TV-Z]{26})$")
_ULID_RANDOM_BYTES = 10

# Where the 80 random bits come from. A deterministic simulation installs a seeded source so a
# seed reproduces the same ids; everything else uses the OS.
_random_bytes: Callable[[int], bytes] = os.urandom


def set_random_source(source: Callable[[int], bytes] | None) -> None:
    """Install a source of random bytes for ids (None restores os.urandom)."""
    global _random_bytes
    _random_bytes = os.urandom if source is None else source


def ulid(now_ms: int | None = None) -> str:
    timestamp_ms = int(time.time() * 1000) if now_ms is None else now_ms
    assert 0 <= timestamp_ms < 2**48, "ULID timestamp out of range"
    value = (timestamp_ms << 80) | int.from_bytes(_random_bytes(_ULID_RANDOM_BYTES), "big")
    chars = []
    for _ in range(_ULID_LENGTH):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int | None = None) -> str:
    assert prefix in ID_PREFIXES, f"unknown id prefix {prefix!r}"
    return f"{prefix}_{ulid(now_ms)}"


def is_id(value: str, prefix: str) -> bool:
    match = _ID_PATTERN.match(value)
    return bool(match) and match is not None and match.group(1) == prefix
