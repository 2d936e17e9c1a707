"""Idempotency keys and injected faults, over real HTTP against a simulator process."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
import stripe

PAYMENT = {
    "amount": "1500",
    "currency": "usd",
    "payment_method": "pm_card_visa",
    "confirm": "true",
    "metadata[billkeep_command]": "cmd_fault",
}


def _succeeded(sim: Any) -> int:
    return int(sim.state()["payment_intents"]["by_status"].get("succeeded", 0))


def test_replay_returns_the_stored_response_and_flags_it(sim: Any) -> None:
    first = sim.post("/v1/payment_intents", PAYMENT, key="key-replay")
    second = sim.post("/v1/payment_intents", PAYMENT, key="key-replay")
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert sim.state()["payment_intents"]["succeeded_by_command"] == {"cmd_fault": 1}


def test_replay_of_a_decline_is_the_same_402(sim: Any) -> None:
    declined = {**PAYMENT, "payment_method": "pm_card_chargeDeclined"}
    first = sim.post("/v1/payment_intents", declined, key="key-decline")
    second = sim.post("/v1/payment_intents", declined, key="key-decline")
    assert first.status_code == second.status_code == 402
    assert second.json() == first.json()
    assert sim.state()["payment_intents"]["total"] == 1


def test_same_key_with_other_parameters_is_an_idempotency_error(sim: Any) -> None:
    client = sim.client()
    params = {"amount": 100, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    client.v1.payment_intents.create(params=params, options={"idempotency_key": "key-reuse"})
    with pytest.raises(stripe.IdempotencyError) as reused:
        client.v1.payment_intents.create(
            params={**params, "amount": 101}, options={"idempotency_key": "key-reuse"}
        )
    assert reused.value.http_status == 400
    assert sim.state()["payment_intents"]["total"] == 1


def test_concurrent_use_of_a_key_is_409(sim: Any) -> None:
    # The first request is slowed by 600 ms of injected latency, so the second overlaps it.
    sim.control(
        "POST",
        "/_sim/faults",
        {
            "rules": [
                {
                    "match": {"method": "POST", "path": "/v1/payment_intents"},
                    "fault": "latency",
                    "latency_ms": 600,
                    "count": 1,
                },
            ]
        },
    )
    results: dict[str, httpx.Response] = {}
    slow = threading.Thread(
        target=lambda: results.update(
            first=sim.post("/v1/payment_intents", PAYMENT, key="key-busy")
        )
    )
    slow.start()
    time.sleep(0.2)
    concurrent = sim.post("/v1/payment_intents", PAYMENT, key="key-busy")
    slow.join()
    assert concurrent.status_code == 409
    assert concurrent.json()["error"]["code"] == "idempotency_key_in_use"
    assert results["first"].status_code == 200
    after = sim.post("/v1/payment_intents", PAYMENT, key="key-busy")
    assert after.headers["Idempotent-Replayed"] == "true"
    assert after.json()["id"] == results["first"].json()["id"]
    assert _succeeded(sim) == 1


def test_many_threads_one_key_one_payment(sim: Any) -> None:
    barrier = threading.Barrier(12)
    statuses: list[int] = []
    ids: set[str] = set()
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        response = sim.post("/v1/payment_intents", PAYMENT, key="key-storm")
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 200:
                ids.add(response.json()["id"])

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {200, 409} and 200 in statuses
    assert len(ids) == 1
    assert _succeeded(sim) == 1


def test_timeout_after_commit_the_payment_exists(sim: Any) -> None:
    sim.control(
        "POST",
        "/_sim/faults",
        {
            "rules": [
                {
                    "match": {"method": "POST", "path": "/v1/payment_intents"},
                    "fault": "timeout_after_commit",
                    "hold_ms": 1500,
                    "count": 1,
                },
            ]
        },
    )
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        sim.post("/v1/payment_intents", PAYMENT, key="key-timeout", timeout_s=0.5)
    assert time.monotonic() - started < 2
    # While the response is still held, the server answers others and the retry replays.
    assert sim.state()["payment_intents"]["succeeded_by_command"] == {"cmd_fault": 1}
    retry = sim.post("/v1/payment_intents", PAYMENT, key="key-timeout")
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert _succeeded(sim) == 1


def test_error_before_commit_nothing_happens(sim: Any) -> None:
    sim.control(
        "POST",
        "/_sim/faults",
        {
            "rules": [
                {
                    "match": {"method": "POST", "path": "/v1/payment_intents"},
                    "fault": "error_before_commit",
                    "status_code": 503,
                    "count": 1,
                },
            ]
        },
    )
    failed = sim.post("/v1/payment_intents", PAYMENT, key="key-before")
    assert failed.status_code == 503 and failed.json()["error"]["type"] == "api_error"
    assert sim.state()["payment_intents"]["total"] == 0
    retry = sim.post("/v1/payment_intents", PAYMENT, key="key-before")
    assert retry.status_code == 200 and "Idempotent-Replayed" not in retry.headers
    assert _succeeded(sim) == 1


def test_error_after_commit_the_payment_exists(sim: Any) -> None:
    client = sim.client()
    sim.control(
        "POST",
        "/_sim/faults",
        {
            "rules": [
                {
                    "match": {"method": "POST", "path": "/v1/payment_intents*"},
                    "fault": "error_after_commit",
                    "count": 1,
                },
            ]
        },
    )
    with pytest.raises(stripe.APIError) as failed:
        client.v1.payment_intents.create(
            params={
                "amount": 1500,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "metadata": {"billkeep_command": "cmd_fault"},
            },
            options={"idempotency_key": "key-after"},
        )
    assert failed.value.http_status == 500
    assert sim.state()["payment_intents"]["succeeded_by_command"] == {"cmd_fault": 1}
    found = client.v1.payment_intents.search(
        params={"query": "metadata['billkeep_command']:'cmd_fault'"}
    )
    assert len(found.data) == 1
    faults = sim.control("GET", "/_sim/faults")
    assert faults["rules"][0]["fired"] == 1


def test_latency_delays_then_answers_normally(sim: Any) -> None:
    sim.control(
        "POST",
        "/_sim/faults",
        {
            "rules": [
                {
                    "match": {"method": "GET", "path": "/v1/customers*"},
                    "fault": "latency",
                    "latency_ms": 400,
                },
            ]
        },
    )
    customer = sim.client().v1.customers.create()
    started = time.monotonic()
    fetched = sim.get(f"/v1/customers/{customer.id}")
    assert time.monotonic() - started >= 0.4
    assert fetched.status_code == 200 and fetched.json()["id"] == customer.id
    sim.control("DELETE", "/_sim/faults")
    started = time.monotonic()
    assert sim.get(f"/v1/customers/{customer.id}").status_code == 200
    assert time.monotonic() - started < 0.4


def _fault_pattern(sim: Any, seed: int) -> list[int]:
    sim.control(
        "POST",
        "/_sim/faults",
        {
            "seed": seed,
            "rules": [
                {
                    "match": {"method": "GET", "path": "/v1/events"},
                    "fault": "error_before_commit",
                    "probability": 0.5,
                },
            ],
        },
    )
    return [sim.get("/v1/events").status_code for _ in range(24)]


def test_fault_decisions_are_deterministic_under_a_seed(sim_factory: Any) -> None:
    first = sim_factory("--seed", "42")
    pattern = _fault_pattern(first, 42)
    assert set(pattern) == {200, 500}  # both outcomes occur, so the comparison means something
    assert _fault_pattern(first, 42) == pattern  # reseeding replays the same decisions
    assert _fault_pattern(first, 43) != pattern
    other_process = sim_factory("--seed", "42")
    assert _fault_pattern(other_process, 42) == pattern
    decisions = other_process.control("GET", "/_sim/faults")["decisions"]
    assert [d["fault"] is not None for d in decisions] == [code == 500 for code in pattern]


def test_invalid_fault_plans_are_refused(sim: Any) -> None:
    bad = httpx.post(f"{sim.url}/_sim/faults", json={"rules": [{"fault": "explode"}]}, timeout=5)
    assert bad.status_code == 400
    bad_probability = httpx.post(
        f"{sim.url}/_sim/faults",
        json={"rules": [{"fault": "latency", "probability": 2}]},
        timeout=5,
    )
    assert bad_probability.status_code == 400
