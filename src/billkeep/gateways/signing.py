"""Stripe's webhook signature scheme, both sides.

Header: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>[,v1=...]`.
Verification accepts any of several v1 values (Stripe sends one per active secret while a secret is
being rolled) and any of several secrets (our side of a rotation), compares in constant time, and
rejects timestamps outside the tolerance in *both* directions: an old one is a replay, a future one
is a forged or badly skewed clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "MAX_SIGNATURE_HEADER_BYTES",
    "SignatureInvalid",
    "TimestampOutOfTolerance",
    "compute_signature",
    "sign_header",
    "verify_header",
]

DEFAULT_TOLERANCE_S = 300
MAX_SIGNATURE_HEADER_BYTES = 4096
MAX_SIGNATURES_PER_HEADER = 8


class SignatureInvalid(Exception):
    code = "signature_invalid"


class TimestampOutOfTolerance(Exception):
    code = "timestamp_out_of_tolerance"


@dataclass(frozen=True, slots=True)
class _ParsedHeader:
    timestamp_s: int
    signatures: tuple[str, ...]


def compute_signature(payload: bytes, secret: str, timestamp_s: int) -> str:
    signed = str(timestamp_s).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign_header(payload: bytes, secrets: Sequence[str], timestamp_s: int) -> str:
    """The header value a gateway sends: one v1 per secret."""
    assert secrets, "at least one secret signs"
    parts = [f"t={timestamp_s}"] + [
        f"v1={compute_signature(payload, s, timestamp_s)}" for s in secrets
    ]
    return ",".join(parts)


def _parse(header: str) -> _ParsedHeader:
    if not header or len(header) > MAX_SIGNATURE_HEADER_BYTES:
        raise SignatureInvalid("missing or oversized signature header")
    timestamp_s: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not value.isdigit():
                raise SignatureInvalid("timestamp is not an integer")
            timestamp_s = int(value)
        elif key == "v1" and len(signatures) < MAX_SIGNATURES_PER_HEADER:
            signatures.append(value)
    if timestamp_s is None:
        raise SignatureInvalid("no timestamp in signature header")
    if not signatures:
        raise SignatureInvalid("no v1 signature in signature header")
    return _ParsedHeader(timestamp_s, tuple(signatures))


def verify_header(
    payload: bytes,
    header: str,
    secrets: Sequence[str],
    now_s: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """Return the signed timestamp if any secret produced any v1 value; raise otherwise."""
    assert secrets, "verification needs at least one secret"
    parsed = _parse(header)
    matched = False
    for secret in secrets:
        expected = compute_signature(payload, secret, parsed.timestamp_s)
        for candidate in parsed.signatures:
            # Evaluate every pair: the time taken must not depend on which one matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureInvalid("no signature matches the payload")
    if abs(now_s - parsed.timestamp_s) > tolerance_s:
        raise TimestampOutOfTolerance(
            f"timestamp {parsed.timestamp_s} is {now_s - parsed.timestamp_s}s from now; "
            f"tolerance is {tolerance_s}s"
        )
    return parsed.timestamp_s
