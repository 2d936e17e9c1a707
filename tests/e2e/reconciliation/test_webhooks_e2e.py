"""End to end: a real gateway simulator process delivers signed webhooks, with its webhook faults
on (duplicates, shuffled order, delays, dropped first attempts), to a real `billkeep serve` on
PostgreSQL whose tenant configured the simulator as its gateway (POST /v1/gateways).

Charges with every test card (async ones settled at the simulator), billkeep refunds, a refund
made outside billkeep and a dispute are driven through the API and the simulator; the webhooks
are flushed and processed by `billkeep events process`. Then every local object must agree with
the simulator, the ledger must balance with clearing == payments - refunds - disputes per
currency, every delivered event must sit in the inbox once with a final outcome, and every
duplicate delivery must have been acknowledged as a duplicate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billkeep.domain.clock import SystemClock
from billkeep.engine.tenants import TenantStore
from billkeep.gateways.simulator_process import SimulatorProcess, free_port
from billkeep.storage.database import Database
from billkeep.storage.tables.core import accounts, charges, journal_entries, postings
from billkeep.storage.tables.reconciliation import webhook_events

pytestmark = pytest.mark.postgres

BILLKEEP_SCRIPT = str(Path(sys.executable).parent / "billkeep")
SECRET_KEY = "e2e-webhooks-secret-key-0123456789abcdefghij"
WEBHOOK_SECRET = "whsec_e2e_reconciliation"
STARTUP_TIMEOUT_S = 60.0  # a loaded machine starts Python slowly
COMMAND_DEADLINE_S = 30.0
DRAIN_DEADLINE_S = 30.0
POLL_S = 0.2
REQUEST_TIMEOUT_S = 20.0
SEED = 20_260_101
CHARGES_PER_CARD = 4
CARDS = (
    "pm_card_visa",
    "pm_card_chargeDeclined",
    "pm_card_chargeDeclinedInsufficientFunds",
    "pm_card_async",
)
WEBHOOK_FAULTS = {
    "seed": SEED,
    "webhooks": {
        "duplicate_probability": 0.35,
        "shuffle": True,
        "delay_ms": [0, 400],
        "drop_first_attempt_probability": 0.35,
    },
}
FINAL_OUTCOMES = {"applied", "duplicate", "stale", "ignored"}
SIM_TO_LOCAL_STATUS = {"succeeded": "succeeded", "requires_payment_method": "failed"}


@dataclass
class Server:
    url: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Driven:
    """What the test did, to compare with what both sides recorded."""

    charge_ids: list[str] = field(default_factory=list)
    external_refunds: list[str] = field(default_factory=list)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> the sim's object


def _server_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLKEEP_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "BILLKEEP_DATABASE_URL": database_url,
            "BILLKEEP_SECRET_KEY": SECRET_KEY,
            "BILLKEEP_MIGRATE_ON_START": "0",
        }
    )
    return env


@pytest.fixture
def server(pg_url: str, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    srv = Server(f"http://127.0.0.1:{port}", _server_env(pg_url), tmp_path / "server.log")
    with srv.log_path.open("ab") as log:
        srv.proc = subprocess.Popen(
            [BILLKEEP_SCRIPT, "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--log-level", "warning"],
            env=srv.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert srv.proc.poll() is None, f"server exited:\n{srv.log()}"
            try:
                if httpx.get(f"{srv.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"server not healthy:\n{srv.log()}"
            time.sleep(0.1)
        yield srv
    finally:
        srv.proc.terminate()
        try:
            srv.proc.wait(10)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait(10)


def _retryable(response: httpx.Response) -> bool:
    if response.status_code >= 500 or response.status_code == 429:
        return True
    return response.status_code == 409 and "idempotency_key_in_use" in response.text


def _command(
    http: httpx.Client, path: str, body: dict[str, Any], key: str, *, accept_202: bool = False
) -> httpx.Response:
    """POST with an Idempotency-Key, re-sent with the same key until a final answer."""
    deadline = time.monotonic() + COMMAND_DEADLINE_S
    while True:
        try:
            response = http.post(path, json=body, headers={"Idempotency-Key": key})
            if response.status_code == 202 and accept_202:
                return response
            if response.status_code != 202 and not _retryable(response):
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no final answer for {path} {key}"
        time.sleep(POLL_S)


def _sim_get(sim: SimulatorProcess, path: str) -> Any:
    response = httpx.get(
        f"{sim.url}{path}",
        headers={"Authorization": f"Bearer {sim.api_key}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    response.raise_for_status()
    return response.json()


def _sim_post(sim: SimulatorProcess, path: str, form: dict[str, str]) -> Any:
    response = httpx.post(
        f"{sim.url}{path}",
        data=form,
        headers={"Authorization": f"Bearer {sim.api_key}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _drive(
    http: httpx.Client, sim: SimulatorProcess, apply_webhooks: Callable[[], object]
) -> Driven:
    driven = Driven()
    customers = {}
    for card in CARDS:
        created = _command(
            http, "/v1/customers", {"email": f"{card}@example.com", "payment_method": card},
            f"cus-{card}",
        )  # fmt: skip
        assert created.status_code == 201, created.text
        customers[card] = created.json()["id"]
    for index in range(CHARGES_PER_CARD):
        for card in CARDS:
            body = {
                "customer_id": customers[card],
                "amount": 1_000 + 137 * index,
                "currency": ("usd", "eur")[index % 2],
            }
            answer = _command(http, "/v1/charges", body, f"ch-{card}-{index}", accept_202=True)
            expected = {"pm_card_visa": 201, "pm_card_async": 202}.get(card, 402)
            assert answer.status_code == expected, (card, answer.status_code, answer.text)
            if answer.status_code != 402:
                driven.charge_ids.append(answer.json()["id"])
    local = [http.get(f"/v1/charges/{cid}").json() for cid in driven.charge_ids]
    for charge in local:
        if charge["status"] == "pending":  # pm_card_async: the bank settles it later
            sim.settle(charge["gateway_reference"])
    # A client refunds a settled async payment only once billkeep knows it succeeded (a refund of a
    # still-pending charge is refused, finally, for that key): let the settlement webhooks arrive.
    _flush_until_delivered(sim)
    apply_webhooks()
    _refund_and_dispute(http, sim, local, driven)
    return driven


def _refund_and_dispute(
    http: httpx.Client, sim: SimulatorProcess, local: list[dict[str, Any]], driven: Driven
) -> None:
    sync = [c for c in local if c["status"] == "succeeded"]
    settled = [c for c in local if c["status"] == "pending"]
    assert len(sync) == CHARGES_PER_CARD and len(settled) == CHARGES_PER_CARD
    # billkeep refunds: one full, one in two parts, one of a settled async payment.
    plan = [(sync[0], None), (sync[1], 300), (sync[1], 200), (settled[0], 500)]
    for n, (charge, amount) in enumerate(plan):
        body: dict[str, Any] = {"charge_id": charge["id"]}
        if amount is not None:
            body["amount"] = amount
        answer = _command(http, "/v1/refunds", body, f"re-{n}")
        assert answer.status_code == 201, answer.text
    # A refund made outside billkeep (the gateway's dashboard): only its webhooks tell billkeep.
    outside = _sim_post(
        sim, "/v1/refunds", {"payment_intent": sync[2]["gateway_reference"], "amount": "250"}
    )
    driven.external_refunds.append(outside["id"])
    for charge, amount in ((sync[3], None), (settled[1], 400)):  # a full and a partial dispute
        body = {"payment_intent": charge["gateway_reference"]}
        if amount is not None:
            body["amount"] = amount
        dispute = sim.control("POST", "/_sim/disputes", body)
        assert dispute["payment_intent"] == charge["gateway_reference"]
        driven.disputes[dispute["id"]] = dispute


def _flush_until_delivered(sim: SimulatorProcess) -> dict[str, Any]:
    deadline = time.monotonic() + DRAIN_DEADLINE_S
    while True:
        state = sim.flush_webhooks()["webhooks"]
        if state["pending"] == 0:
            return dict(state)
        assert time.monotonic() < deadline, f"webhooks still pending: {state}"
        time.sleep(POLL_S)


def _inbox(db: Database, tenant_id: str) -> list[Any]:
    with db.read() as conn:
        return list(
            conn.execute(
                sa.select(webhook_events).where(webhook_events.c.tenant_id == tenant_id)
            ).all()
        )


def _process_events(server: Server, db: Database, tenant_id: str) -> list[Any]:
    """`billkeep events process` until no event is left received or parked (parked events retry
    after a delay: the command is run again once they are due)."""
    deadline = time.monotonic() + DRAIN_DEADLINE_S
    while True:
        done = subprocess.run(
            [BILLKEEP_SCRIPT, "events", "process"],
            env=server.env, capture_output=True, text=True, timeout=DRAIN_DEADLINE_S,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert re.match(r"processed \d+ events", done.stdout), done.stdout
        rows = _inbox(db, tenant_id)
        if all(r.outcome not in ("received", "parked") for r in rows):
            return rows
        pending = [
            (r.event_type, r.outcome, r.reason) for r in rows if r.outcome in ("received", "parked")
        ]
        assert time.monotonic() < deadline, f"events still pending: {pending}"
        time.sleep(1.0)


def _metric(text: str, name: str, label: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _clearing_by_currency(db: Database, tenant_id: str) -> dict[str, int]:
    signed = sa.case((postings.c.direction == "debit", postings.c.amount_minor),
                     else_=-postings.c.amount_minor)  # fmt: skip
    with db.read() as conn:
        rows = conn.execute(
            sa.select(accounts.c.currency, sa.func.sum(signed))
            .join(
                postings,
                sa.and_(
                    postings.c.tenant_id == accounts.c.tenant_id,
                    postings.c.account_id == accounts.c.id,
                ),
            )
            .where(accounts.c.tenant_id == tenant_id, accounts.c.code.like("gateway_clearing:%"))
            .group_by(accounts.c.currency)
        ).all()
    return {str(currency): int(total) for currency, total in rows}


def _entry_keys(db: Database, tenant_id: str) -> list[str]:
    with db.read() as conn:
        return [
            str(k)
            for k in conn.execute(
                sa.select(journal_entries.c.entry_key).where(
                    journal_entries.c.tenant_id == tenant_id
                )
            ).scalars()
        ]


def test_webhooks_with_faults_converge_to_the_gateway(
    server: Server, pg_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    db = Database(pg_url)
    tenant_id, api_key = TenantStore(db).create_tenant("webhooks e2e", SystemClock().now_ms())
    sim = SimulatorProcess(
        tmp_path / "sim.sqlite",
        seed=SEED,
        extra_args=["--async-settle-ms", "0", "--fee-percent", "0", "--fee-fixed", "0",
                    "--webhook-retry-base-ms", "100"],
    )  # fmt: skip
    http = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    try:
        # The gateway config names the simulator's address; the simulator needs the gateway id
        # for its webhook URL: the port is chosen first, the simulator started after.
        created = _command(
            http,
            "/v1/gateways",
            {"kind": "stripe", "api_key": sim.api_key, "webhook_secret": WEBHOOK_SECRET,
             "api_base": sim.url},
            "gateway-sim",
        )  # fmt: skip
        assert created.status_code == 201, created.text
        gateway = created.json()
        sim.webhook_url = f"{server.url}{gateway['webhook_url_path']}"
        assert sim.webhook_url.endswith(f"/v1/webhooks/{gateway['id']}")
        sim.webhook_secret = WEBHOOK_SECRET
        sim.start()
        sim.set_faults(WEBHOOK_FAULTS)
        driven = _drive(http, sim, lambda: _process_events(server, db, tenant_id))
        delivered = _flush_until_delivered(sim)
        rows = _process_events(server, db, tenant_id)
        _assert_inbox(sim, rows, delivered, http)
        _assert_objects(sim, http, db, tenant_id, gateway["id"], driven)
    finally:
        http.close()
        sim.stop()
        db.dispose()
    assert time.monotonic() - started < 120, "the e2e run should stay around a minute"


def _assert_inbox(
    sim: SimulatorProcess, rows: list[Any], delivered: dict[str, Any], http: httpx.Client
) -> None:
    assert delivered["failed"] == 0, delivered
    log = sim.control("GET", "/_sim/webhooks")["data"]
    events = {d["event_id"]: d["event_type"] for d in log}
    assert len(log) == delivered["delivered"] == len(events), "one delivery per event"
    attempts = [a for d in log for a in d["attempt_log"]]
    outcomes = Counter(a["outcome"] for a in attempts)
    # The faults really fired: some first attempts dropped, some deliveries sent twice.
    assert outcomes["dropped"] > 0 and outcomes["duplicate"] > 0, outcomes
    acknowledged = sum(
        1 for a in attempts if a["status_code"] is not None and 200 <= a["status_code"] < 300
    )
    # Every event exactly once in the inbox, each with a final outcome.
    by_event = Counter(r.event_id for r in rows)
    assert set(by_event) == set(events), set(by_event) ^ set(events)
    assert max(by_event.values()) == 1
    stored = Counter(r.outcome for r in rows)
    assert set(stored) <= FINAL_OUTCOMES, [(r.event_type, r.outcome, r.reason) for r in rows]
    assert stored["applied"] > 0 and stored["duplicate"] > 0, stored
    for row in rows:
        assert row.event_type == events[row.event_id]
    # Every acknowledged re-send was recognized as a duplicate, never stored again.
    metrics = http.get("/metrics").text
    name = "billkeep_webhooks_received_total"
    assert _metric(metrics, name, 'duplicate="false"') == len(events)
    assert _metric(metrics, name, 'duplicate="true"') == acknowledged - len(events)
    assert acknowledged > len(events)


def _assert_objects(
    sim: SimulatorProcess,
    http: httpx.Client,
    db: Database,
    tenant_id: str,
    gateway_id: str,
    driven: Driven,
) -> None:
    refunded_at_sim: dict[str, int] = defaultdict(int)
    refund_ids: set[str] = set()
    expected_clearing: dict[str, int] = defaultdict(int)
    with db.read() as conn:
        local_rows = conn.execute(sa.select(charges).where(charges.c.tenant_id == tenant_id)).all()
    assert len(local_rows) == len(CARDS) * CHARGES_PER_CARD
    for row in local_rows:
        assert row.gateway == gateway_id and row.gateway_reference is not None
        intent = _sim_get(sim, f"/v1/payment_intents/{row.gateway_reference}")
        assert intent["metadata"]["billkeep_command"] == row.command_id
        assert (row.amount_minor, row.currency) == (intent["amount"], intent["currency"])
        assert row.status == SIM_TO_LOCAL_STATUS[intent["status"]], (row.id, intent["status"])
        refunds = _sim_get(sim, f"/v1/refunds?payment_intent={row.gateway_reference}")["data"]
        for refund in refunds:
            assert refund["status"] == "succeeded"
            refunded_at_sim[row.gateway_reference] += refund["amount"]
            refund_ids.add(refund["id"])
        assert row.amount_refunded_minor == refunded_at_sim[row.gateway_reference], row.id
        if intent["status"] == "succeeded":
            expected_clearing[row.currency] += intent["amount"]
            expected_clearing[row.currency] -= refunded_at_sim[row.gateway_reference]
    assert set(driven.external_refunds) <= refund_ids and len(refund_ids) == 5
    dispute_total: dict[str, int] = defaultdict(int)
    for dispute in driven.disputes.values():
        dispute_total[dispute["currency"]] += dispute["amount"]
        expected_clearing[dispute["currency"]] -= dispute["amount"]
    keys = _entry_keys(db, tenant_id)
    assert len(keys) == len(set(keys))
    # Each fact posted once: one payment entry per succeeded intent, one per refund, per dispute.
    succeeded = sum(1 for r in local_rows if r.status == "succeeded")
    assert sum(1 for k in keys if k.startswith("payment:")) == succeeded
    assert {k.removeprefix("refund:") for k in keys if k.startswith("refund:")} == refund_ids
    assert {k.removeprefix("dispute:") for k in keys if k.startswith("dispute:")} == set(
        driven.disputes
    )
    balance = http.get("/v1/ledger/trial_balance")
    assert balance.status_code == 200, balance.text
    for line in balance.json()["currencies"]:
        assert line["debits"] == line["credits"], line
    assert _clearing_by_currency(db, tenant_id) == dict(expected_clearing)
    assert sum(dispute_total.values()) > 0
