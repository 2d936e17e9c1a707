"""Pieces of Stripe's idempotency semantics that live outside the store's unique constraint."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from billkeep.gateways.simulator.errors import StripeError, invalid_request
from billkeep.gateways.simulator.limits import IDEMPOTENCY_KEY_MAX_CHARS

__all__ = ["InFlightKeys", "KeyClaim", "fingerprint", "validate_key"]


def fingerprint(operation: str, params: Any) -> str:
    """A stable digest of what a request asked for; the same key must always ask the same."""
    canonical = json.dumps([operation, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str) -> str:
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
        raise invalid_request(
            f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_MAX_CHARS} characters",
            param="Idempotency-Key",
        )
    return key


class KeyClaim:
    """One request's hold on a key; releasing twice, or after someone else took it, is harmless."""

    def __init__(self, owner: InFlightKeys, key: str) -> None:
        self._owner = owner
        self.key = key

    def release(self) -> None:
        self._owner._release(self)


class InFlightKeys:
    """Keys whose request is executing right now in this process.

    The store's unique constraint already makes a second effect impossible; this registry turns a
    concurrent retry into Stripe's 409 instead of making it wait on the write lock and replay. It is
    in memory on purpose: a crash ends every request, so nothing can stay "in use" after a restart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, KeyClaim] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[KeyClaim]:
        claim = KeyClaim(self, key)
        with self._lock:
            if key in self._claims:
                raise StripeError(
                    409,
                    "invalid_request_error",
                    "There is currently another in-progress request using this Idempotent Key "
                    "(that probably means you submitted twice, and the other request is still "
                    "going through): " + key + ". Please try again later.",
                    code="idempotency_key_in_use",
                )
            self._claims[key] = claim
        try:
            yield claim
        finally:
            claim.release()

    def _release(self, claim: KeyClaim) -> None:
        with self._lock:
            if self._claims.get(claim.key) is claim:
                del self._claims[claim.key]
