"""Time is injected: the engine asks a Clock, so tests and simulations can bill months in seconds."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "Clock",
    "ManualClock",
    "SystemClock",
    "ms_to_datetime",
    "ms_to_rfc3339",
    "rfc3339_to_ms",
]


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (thread-safe)."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._now_ms = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now_ms

    def advance(self, delta_ms: int) -> int:
        assert delta_ms >= 0, "a clock never moves backward"
        with self._lock:
            self._now_ms += delta_ms
            return self._now_ms

    def set(self, now_ms: int) -> None:
        with self._lock:
            assert now_ms >= self._now_ms, "a clock never moves backward"
            self._now_ms = now_ms


def ms_to_datetime(value_ms: int) -> datetime:
    return datetime.fromtimestamp(value_ms / 1000, tz=UTC)


def ms_to_rfc3339(value_ms: int | None) -> str | None:
    if value_ms is None:
        return None
    seconds, millis = divmod(value_ms, 1000)
    base = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{millis:03d}Z"


def rfc3339_to_ms(value: str) -> int:
    """Parse an RFC 3339 timestamp with an explicit offset (Z or +hh:mm) to epoch milliseconds."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    return int(parsed.timestamp() * 1000)
