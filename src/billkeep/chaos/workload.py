"""The chaos workload: setup through the API, then driver threads sending a mixed load.

Tenant 1 ("t1"): customers (one whose card declines), charges in usd and eur (some declined),
refunds (some racing on the same charge), usage batches with duplicates, billing runs.
Tenant 2 ("t2"): its own charges, plus probes of tenant 1's objects that must all be 404 (I10),
and tenant 1's idempotency key strings reused with its own requests.

Billing (I6, I9): subscriptions start 35 days ago, so their first period has ended; that period's
usage is ingested before any worker runs, then invoiced during the chaos (by the driver's billing
runs and the workers' billing cycles) and charged through the faulty gateway. Usage sent during
the chaos is timestamped now, in the open period, so it is never invoiced during the run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from billkeep.chaos.client import ApiClient, FinalAnswer
from billkeep.domain.clock import ms_to_rfc3339

__all__ = ["Driver", "Fixtures", "setup_fixtures"]

DAY_MS = 86_400_000
SUBSCRIPTION_AGE_MS = 35 * DAY_MS
CUSTOMERS = 5
SUBSCRIPTIONS = 4
PERIOD_EVENTS_PER_SUBSCRIPTION = 25
FLAT_FEE_MINOR = 500
UNIT_AMOUNT_MINOR = 3
USAGE_BATCH_EVENTS = 20
CURRENCIES = ("usd", "eur")
MAX_CHARGE_MINOR = 5_000
SETUP_TIMEOUT_MS = 60_000
CLIENT_PATIENCE_S = 10.0


@dataclass
class Fixtures:
    customers: list[str]
    declining_customer: str
    subscriptions: list[str]
    period_events: dict[str, list[dict[str, Any]]]  # subscription -> its first period's events
    t2_customer: str


def _must(answer: FinalAnswer | None, what: str) -> Any:
    if answer is None or answer.status != 201:
        raise RuntimeError(f"setup: {what} failed: {answer}")
    return answer.json()


def setup_fixtures(t1: ApiClient, t2: ApiClient, now_ms: int) -> Fixtures:
    deadline = time.monotonic() + SETUP_TIMEOUT_MS / 1000
    customers = [
        _must(
            t1.command("/v1/customers", {"payment_method": "pm_card_visa"}, f"cus-{n}", deadline),
            "customer",
        )["id"]
        for n in range(CUSTOMERS)
    ]
    declining = _must(
        t1.command(
            "/v1/customers", {"payment_method": "pm_card_chargeDeclined"}, "cus-declining", deadline
        ),
        "customer",
    )["id"]
    metric = {"code": "calls", "name": "API calls", "aggregation": "count"}
    _must(t1.command("/v1/metrics", metric, "metric-calls", deadline), "metric")
    plan_body = {
        "code": "chaos",
        "name": "Chaos",
        "currency": "usd",
        "interval": "month",
        "prices": [
            {"type": "flat", "amount": FLAT_FEE_MINOR},
            {"type": "per_unit", "metric": "calls", "unit_amount": UNIT_AMOUNT_MINOR},
        ],
    }
    plan = _must(t1.command("/v1/plans", plan_body, "plan-chaos", deadline), "plan")["id"]
    start_ms = now_ms - SUBSCRIPTION_AGE_MS
    subscriptions: list[str] = []
    events: dict[str, list[dict[str, Any]]] = {}
    for n in range(SUBSCRIPTIONS):
        body = {
            "customer_id": customers[n % CUSTOMERS],
            "plan_id": plan,
            "start_at": ms_to_rfc3339(start_ms),
        }
        sub = _must(t1.command("/v1/subscriptions", body, f"sub-{n}", deadline), "subscription")
        subscriptions.append(sub["id"])
        events[sub["id"]] = [
            {
                "event_id": f"period-{n}-{e}",
                "subscription_id": sub["id"],
                "metric": "calls",
                "timestamp": ms_to_rfc3339(start_ms + DAY_MS + e * 60_000),
            }
            for e in range(PERIOD_EVENTS_PER_SUBSCRIPTION)
        ]
        if t1.post_usage(events[sub["id"]], deadline) is None:
            raise RuntimeError("setup: usage ingestion did not answer")
    t2_customer = _must(
        t2.command("/v1/customers", {"payment_method": "pm_card_visa"}, "cus-0", deadline),
        "tenant 2 customer",
    )["id"]
    return Fixtures(customers, declining, subscriptions, events, t2_customer)


@dataclass
class Driver:
    """Runs `threads` tenant-1 clients and one tenant-2 client until `stop` is set."""

    t1_clients: list[ApiClient]
    t2_client: ApiClient
    fixtures: Fixtures
    seed: int
    stop: threading.Event = field(default_factory=threading.Event)
    succeeded_charges: list[tuple[str, int]] = field(default_factory=list)  # (id, amount)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0

    def _key(self, prefix: str) -> str:
        with self.lock:
            self._counter += 1
            return f"{prefix}-{self.seed}-{self._counter}"

    def deadline(self) -> float:
        # A client keeps retrying through server restarts (a few seconds each) for this long;
        # a key still without a final answer is retried again during recovery.
        return time.monotonic() + CLIENT_PATIENCE_S

    def run(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._loop, args=(c, self._t1_action), daemon=True)
            for c in self.t1_clients
        ]
        threads.append(
            threading.Thread(target=self._loop, args=(self.t2_client, self._t2_action), daemon=True)
        )
        for thread in threads:
            thread.start()
        return threads

    def _loop(self, client: ApiClient, action: Any) -> None:
        while not self.stop.is_set():
            try:
                action(client)
            except Exception as exc:  # a harness bug must not silently stop the load
                client.log.error(repr(exc))
                time.sleep(0.2)

    # --- tenant 1 --------------------------------------------------------------------------------
    def _t1_action(self, client: ApiClient) -> None:
        roll = client.rng.random()
        if roll < 0.45:
            self._charge(client)
        elif roll < 0.62:
            self._refund(client)
        elif roll < 0.68:
            self._racing_refunds(client)
        elif roll < 0.85:
            self._usage(client)
        elif roll < 0.92:
            self._billing_run(client)
        else:
            self._replay_old_key(client)

    def _charge(self, client: ApiClient) -> None:
        rng = client.rng
        declined = rng.random() < 0.1
        body: dict[str, Any] = {
            "customer_id": self.fixtures.declining_customer
            if declined
            else rng.choice(self.fixtures.customers),
            "amount": rng.randint(100, MAX_CHARGE_MINOR),
            "currency": rng.choice(CURRENCIES),
        }
        if not declined and rng.random() < 0.05:
            body["payment_method"] = "pm_card_chargeDeclinedInsufficientFunds"
        answer = client.command("/v1/charges", body, self._key("charge"), self.deadline())
        if answer is not None and answer.status == 201:
            charge = answer.json()
            with self.lock:
                self.succeeded_charges.append((charge["id"], int(charge["amount"])))

    def _pick_charge(self, client: ApiClient) -> tuple[str, int] | None:
        with self.lock:
            if not self.succeeded_charges:
                return None
            return client.rng.choice(self.succeeded_charges)

    def _refund(self, client: ApiClient) -> None:
        picked = self._pick_charge(client)
        if picked is None:
            return
        charge_id, amount = picked
        body: dict[str, Any] = {"charge_id": charge_id}
        if client.rng.random() < 0.7:
            body["amount"] = client.rng.randint(1, max(1, amount // 2))
        client.command("/v1/refunds", body, self._key("refund"), self.deadline())

    def _racing_refunds(self, client: ApiClient) -> None:
        """Two refunds of 60% each of one charge at once: at most one may succeed (I7)."""
        picked = self._pick_charge(client)
        if picked is None:
            return
        charge_id, amount = picked
        body = {"charge_id": charge_id, "amount": max(1, amount * 6 // 10)}
        keys = [self._key("race"), self._key("race")]
        threads = [
            threading.Thread(
                target=client.command, args=("/v1/refunds", body, key, self.deadline())
            )
            for key in keys
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.log.count("racing_refund_pairs")

    def _usage(self, client: ApiClient) -> None:
        rng = client.rng
        now = ms_to_rfc3339(int(time.time() * 1000))
        fresh = [
            {
                "event_id": self._key("evt"),
                "subscription_id": rng.choice(self.fixtures.subscriptions),
                "metric": "calls",
                "timestamp": now,
            }
            for _ in range(USAGE_BATCH_EVENTS)
        ]
        # Duplicates: a few events twice in the batch, and some of the first period's again.
        old = rng.sample(self.fixtures.period_events[rng.choice(self.fixtures.subscriptions)], 3)
        batch = fresh + fresh[:3] + old
        rng.shuffle(batch)
        if client.post_usage(batch, self.deadline()) is not None:
            client.log.count("usage_batches_acked")

    def _billing_run(self, client: ApiClient) -> None:
        body = {"as_of": ms_to_rfc3339(int(time.time() * 1000) - 1000)}
        client.command("/v1/billing_runs", body, self._key("run"), self.deadline())

    def _replay_old_key(self, client: ApiClient) -> None:
        """A client re-sends a request it already had an answer to (a replay, I5)."""
        with client.log.lock:
            done = [ref for ref in client.log.finals if ref[0] == client.label]
            if not done:
                return
            ref = client.rng.choice(done)
            body = client.log.requests[ref]
        client.command(ref[1], body, ref[2], self.deadline())

    # --- tenant 2 --------------------------------------------------------------------------------
    def _t2_action(self, client: ApiClient) -> None:
        rng = client.rng
        roll = rng.random()
        if roll < 0.4:
            body = {
                "customer_id": self.fixtures.t2_customer,
                "amount": rng.randint(100, MAX_CHARGE_MINOR),
                "currency": "usd",
            }
            client.command("/v1/charges", body, self._key("t2charge"), self.deadline())
            return
        picked = self._pick_charge(client)
        if picked is None:
            time.sleep(0.05)
            return
        charge_id, _amount = picked
        if roll < 0.6:
            self._probe(client, f"/v1/charges/{charge_id}")
        elif roll < 0.7:
            self._probe(client, f"/v1/customers/{rng.choice(self.fixtures.customers)}")
        elif roll < 0.85:
            answer = client.command(
                "/v1/refunds", {"charge_id": charge_id}, self._key("t2refund"), self.deadline()
            )
            client.log.count("isolation_probes")
            if answer is not None and answer.status != 404:
                client.log.breach(f"t2 refund of t1's {charge_id} answered {answer.status}")
        else:
            self._same_key_string(client)

    def _probe(self, client: ApiClient, path: str) -> None:
        response = client.get(path, self.deadline())
        client.log.count("isolation_probes")
        if response is not None and response.status_code != 404:
            client.log.breach(f"t2 GET {path} answered {response.status_code}")

    def _same_key_string(self, client: ApiClient) -> None:
        """Tenant 1's key string, tenant 2's own request: a separate command, its own answer."""
        with client.log.lock:
            t1_keys = [
                ref[2] for ref in client.log.finals if ref[0] == "t1" and ref[1] == "/v1/charges"
            ]
        if not t1_keys:
            return
        body = {"customer_id": self.fixtures.t2_customer, "amount": 111, "currency": "usd"}
        answer = client.command("/v1/charges", body, client.rng.choice(t1_keys), self.deadline())
        client.log.count("isolation_probes")
        if answer is not None and answer.status in (201, 402):
            got = answer.json()
            if (got.get("customer_id"), got.get("amount")) != (self.fixtures.t2_customer, 111):
                client.log.breach(f"t2 reused a t1 key string and got t1's answer: {got}")
