"""Tables of the gateways area (filled in by that area's work)."""

from __future__ import annotations

__all__: list[str] = []
