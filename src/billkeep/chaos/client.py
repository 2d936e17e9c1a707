"""A real HTTP client of billkeep: retries like a production client and records what it was told.

A command (POST with an Idempotency-Key) is re-sent with the SAME key on 202 (outcome unknown),
409 `idempotency_key_in_use`, 5xx and connection errors, on any server, until a final answer or
the deadline. Every final answer is kept per key, so the audit can check that replays are
byte-identical (I5) and that every acknowledged object was recorded (I11).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["ApiClient", "ClientLog", "FinalAnswer", "KeyRef"]

REQUEST_TIMEOUT_MS = 20_000  # above the gateway adapter's 10 s read timeout: a held call answers
RETRY_PAUSE_MS = 100
MAX_RETRY_PAUSE_MS = 500
_IN_USE = "idempotency_key_in_use"

KeyRef = tuple[str, str, str]  # (tenant label, path, idempotency key)


@dataclass(frozen=True)
class FinalAnswer:
    status: int
    body: bytes
    command_id: str | None
    replayed: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ClientLog:
    """Everything every client saw; shared by all driver threads (guarded by a lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # named events: unknown_202, ...
    finals: dict[KeyRef, list[FinalAnswer]] = field(default_factory=dict)
    requests: dict[KeyRef, Any] = field(default_factory=dict)  # the body sent under each key
    pending: set[KeyRef] = field(default_factory=set)  # keys with no final answer yet
    charges_seen: dict[str, set[str]] = field(default_factory=dict)  # tenant id -> charge ids
    commands_seen: dict[str, set[str]] = field(default_factory=dict)  # tenant id -> command ids
    events_acked: dict[str, set[str]] = field(default_factory=dict)  # tenant id -> event ids
    breaches: list[str] = field(default_factory=list)  # I10: answers a tenant must not get
    errors: list[str] = field(default_factory=list)  # harness errors (not invariants)

    def count(self, outcome: str, n: int = 1) -> None:
        with self.lock:
            self.outcomes[outcome] += n

    def status(self, code: int) -> None:
        with self.lock:
            self.statuses[code] += 1

    def breach(self, text: str) -> None:
        with self.lock:
            self.breaches.append(text)

    def error(self, text: str) -> None:
        with self.lock:
            self.outcomes["driver_error"] += 1
            self.errors.append(text)

    def remember(self, bucket: dict[str, set[str]], tenant_id: str, ids: Sequence[str]) -> None:
        with self.lock:
            bucket.setdefault(tenant_id, set()).update(ids)


def _retryable(response: httpx.Response) -> bool:
    if response.status_code == 202 or response.status_code >= 500:
        return True
    if response.status_code == 409:
        try:
            return bool(response.json().get("code") == _IN_USE)
        except ValueError:
            return True
    return response.status_code == 429


class ApiClient:
    """One tenant's client, spreading requests over every server (each may be dead any moment)."""

    def __init__(
        self,
        label: str,
        tenant_id: str,
        api_key: str,
        server_urls: Sequence[str],
        log: ClientLog,
        rng: random.Random,
    ) -> None:
        self.label = label
        self.tenant_id = tenant_id
        self.urls = list(server_urls)
        self.log = log
        self.rng = rng
        self.http = httpx.Client(
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=REQUEST_TIMEOUT_MS / 1000,
        )

    def close(self) -> None:
        self.http.close()

    def _url(self, path: str) -> str:
        return self.rng.choice(self.urls) + path

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        try:
            response = self.http.request(method, self._url(path), **kwargs)
        except httpx.TransportError:
            self.log.count("connection_error")
            return None
        self.log.status(response.status_code)
        return response

    def _pause(self, response: httpx.Response | None, tries: int) -> None:
        pause_ms = min(RETRY_PAUSE_MS * (1 + tries), MAX_RETRY_PAUSE_MS)
        time.sleep(pause_ms * (0.5 + self.rng.random()) / 1000)

    # --- commands --------------------------------------------------------------------------------
    def command(self, path: str, body: Any, key: str, deadline: float) -> FinalAnswer | None:
        """POST until a final answer (recorded) or the deadline (the key stays pending)."""
        ref: KeyRef = (self.label, path, key)
        with self.log.lock:
            self.log.requests.setdefault(ref, body)
            self.log.pending.add(ref)
        tries = 0
        while True:
            response = self._send("POST", path, json=body, headers={"Idempotency-Key": key})
            if response is not None:
                self._observe(response)
                if not _retryable(response):
                    return self._final(ref, response)
            tries += 1
            if time.monotonic() >= deadline:
                return None
            self._pause(response, tries)

    def _observe(self, response: httpx.Response) -> None:
        command_id = response.headers.get("billkeep-command-id")
        if command_id:
            self.log.remember(self.log.commands_seen, self.tenant_id, [command_id])
        if response.status_code == 202:
            self.log.count("unknown_202")
        if response.status_code == 409:
            self.log.count("key_in_use_409")
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, dict) and body.get("object") == "charge" and "id" in body:
            self.log.remember(self.log.charges_seen, self.tenant_id, [str(body["id"])])

    def _final(self, ref: KeyRef, response: httpx.Response) -> FinalAnswer:
        answer = FinalAnswer(
            response.status_code,
            response.content,
            response.headers.get("billkeep-command-id"),
            response.headers.get("idempotent-replayed") == "true",
        )
        with self.log.lock:
            self.log.finals.setdefault(ref, []).append(answer)
            self.log.pending.discard(ref)
        return answer

    # --- other requests --------------------------------------------------------------------------
    def post_usage(self, events: list[dict[str, Any]], deadline: float) -> Any | None:
        """POST /v1/usage_events (no key: event ids make it idempotent) until a 200."""
        tries = 0
        while True:
            response = self._send("POST", "/v1/usage_events", json={"events": events})
            if response is not None and response.status_code == 200:
                result = response.json()
                rejected = {r["event_id"] for r in result["rejected"]}
                acked = [e["event_id"] for e in events if e["event_id"] not in rejected]
                self.log.remember(self.log.events_acked, self.tenant_id, acked)
                self.log.count("usage_events_sent", len(events))
                self.log.count("usage_duplicates", int(result["duplicates"]))
                return result
            if response is not None and response.status_code < 500:
                raise RuntimeError(f"usage batch refused: {response.status_code} {response.text}")
            tries += 1
            if time.monotonic() >= deadline:
                return None
            self._pause(response, tries)

    def get(self, path: str, deadline: float) -> httpx.Response | None:
        """GET, retried on 5xx and connection errors."""
        tries = 0
        while True:
            response = self._send("GET", path)
            if response is not None and response.status_code < 500:
                return response
            tries += 1
            if time.monotonic() >= deadline:
                return None
            self._pause(response, tries)
