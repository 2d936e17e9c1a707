"""Prometheus metrics of the HTTP API.

With several uvicorn workers, each worker is its own process: prometheus-client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, set by `billkeep serve` before the workers start) makes every
worker write its samples to files that `/metrics` aggregates, whichever worker answers.
Only counters and histograms are used: they aggregate correctly across processes.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "COMMANDS",
    "CONTENT_TYPE_LATEST",
    "IDEMPOTENCY_IN_USE",
    "IDEMPOTENCY_KEY_REUSED",
    "REPLAYS",
    "REQUESTS",
    "REQUEST_LATENCY",
    "UNKNOWN_GATEWAY_OUTCOMES",
    "render_metrics",
]

UNMATCHED_ROUTE = "unmatched"  # keeps label cardinality bounded for 404 probes
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

REQUESTS = Counter(
    "billkeep_http_requests_total",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
REQUEST_LATENCY = Histogram(
    "billkeep_http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS_S,
)
COMMANDS = Counter(
    "billkeep_commands_total",
    "Command responses by operation, command state and whether the outcome is final.",
    ["operation", "state", "final"],
)
REPLAYS = Counter(
    "billkeep_idempotent_replays_total",
    "Responses replayed from a stored final outcome.",
    ["operation"],
)
IDEMPOTENCY_IN_USE = Counter(
    "billkeep_idempotency_key_in_use_total",
    "409 idempotency_key_in_use: the first request with the key was still running.",
)
IDEMPOTENCY_KEY_REUSED = Counter(
    "billkeep_idempotency_key_reused_total",
    "422 idempotency_key_reused: a key sent again with a different request.",
)
UNKNOWN_GATEWAY_OUTCOMES = Counter(
    "billkeep_charge_outcome_unknown_total",
    "202 responses of charges: the gateway's outcome was not known yet.",
)


def render_metrics() -> bytes:
    """The Prometheus text exposition, aggregated over every worker in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
