"""Per-tenant gateway configs: API and CLI, secrets encrypted at rest and never returned, and
charges going through the tenant's configured Stripe gateway (a real simulator process)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.integration.gateways.stripe_harness import shared_sim
from typer.testing import CliRunner

from billkeep.api.app import create_app
from billkeep.cli.main import app as cli_app
from billkeep.engine.service import Billkeep
from billkeep.engine.worker import RecoveryWorker
from billkeep.gateways.crypto import SECRET_KEY_ENV, SecretKeyMissing, key_file_path
from billkeep.gateways.simulator_process import SimulatorProcess
from billkeep.runtime import open_billkeep
from billkeep.storage.database import Database
from billkeep.storage.tables.core import commands
from billkeep.storage.tables.gateways import gateway_configs

__all__ = ["shared_sim"]

API_KEY = "sk_test_tenant_secret_0123456789"
WEBHOOK_SECRET = "whsec_tenant_secret_abcdefghij"


@pytest.fixture
def billkeep(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Billkeep]:
    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    bk = open_billkeep(sqlite_url)
    yield bk
    bk.close()


@pytest.fixture
def api(billkeep: Billkeep) -> Iterator[tuple[TestClient, str, dict[str, str]]]:
    tenant_id, key = billkeep.tenants.create_tenant("gw tenant", 1_767_225_600_000)
    with TestClient(create_app(billkeep), raise_server_exceptions=False) as client:
        yield client, tenant_id, {"Authorization": f"Bearer {key}"}


def _raw_text(url: str, table: sa.Table) -> str:
    db = Database(url)
    rows = db.run_read(lambda conn: conn.execute(sa.select(table)).all())
    db.dispose()
    return json.dumps([list(map(str, row)) for row in rows])


def _create(client: TestClient, auth: dict[str, str], key: str, **body: Any) -> Any:
    payload = {"kind": "stripe", "api_key": API_KEY, "webhook_secret": WEBHOOK_SECRET, **body}
    return client.post("/v1/gateways", json=payload, headers={**auth, "Idempotency-Key": key})


def test_create_encrypts_secrets_and_never_returns_them(
    api: tuple[TestClient, str, dict[str, str]], sqlite_url: str
) -> None:
    client, _tenant, auth = api
    created = _create(client, auth, "gw-1", api_base="http://127.0.0.1:9/")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"].startswith("gw_") and body["object"] == "gateway"
    assert (body["kind"], body["api_base"]) == ("stripe", "http://127.0.0.1:9")
    assert body["webhook_url_path"] == f"/v1/webhooks/{body['id']}"
    listed = client.get("/v1/gateways", headers=auth)
    fetched = client.get(f"/v1/gateways/{body['id']}", headers=auth)
    command = client.get(f"/v1/commands/{created.headers['Billkeep-Command-Id']}", headers=auth)
    for response in (created, listed, fetched, command):
        assert response.status_code == 200 or response is created
        assert API_KEY not in response.text and WEBHOOK_SECRET not in response.text
    assert [g["id"] for g in listed.json()["data"]] == [body["id"]]
    # At rest: neither the config row nor the command's stored request holds a secret in clear.
    for table in (gateway_configs, commands):
        raw = _raw_text(sqlite_url, table)
        assert API_KEY not in raw and WEBHOOK_SECRET not in raw
    assert "sealed:v1:" in json.dumps(command.json()["request"])
    # The generated server key sits beside the SQLite database, readable by its owner only.
    key_file = key_file_path(sqlite_url)
    assert key_file is not None and key_file.exists()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_create_is_idempotent_and_a_changed_secret_is_another_request(
    api: tuple[TestClient, str, dict[str, str]],
) -> None:
    client, _tenant, auth = api
    first = _create(client, auth, "gw-same")
    again = _create(client, auth, "gw-same")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    changed = _create(client, auth, "gw-same", webhook_secret="whsec_another_one_entirely")
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"
    assert WEBHOOK_SECRET not in changed.text
    invalid = _create(client, auth, "gw-bad", api_key="pk_test_publishable")
    assert invalid.status_code == 422
    assert "pk_test_publishable" not in invalid.text  # validation never echoes a secret
    assert len(client.get("/v1/gateways", headers=auth).json()["data"]) == 1


def test_tenants_do_not_see_each_others_gateways(
    api: tuple[TestClient, str, dict[str, str]], billkeep: Billkeep
) -> None:
    client, _tenant, auth = api
    gateway_id = _create(client, auth, "gw-iso").json()["id"]
    _other, other_key = billkeep.tenants.create_tenant("other", 1_767_225_600_000)
    other = {"Authorization": f"Bearer {other_key}"}
    assert client.get("/v1/gateways", headers=other).json()["data"] == []
    assert client.get(f"/v1/gateways/{gateway_id}", headers=other).status_code == 404


def test_charges_go_through_the_tenants_configured_gateway(
    api: tuple[TestClient, str, dict[str, str]], billkeep: Billkeep, shared_sim: SimulatorProcess
) -> None:
    client, _tenant, auth = api
    gateway_id = _create(client, auth, "gw-sim", api_base=shared_sim.url).json()["id"]
    customer = client.post(
        "/v1/customers",
        json={"payment_method": "pm_card_visa"},
        headers={**auth, "Idempotency-Key": "cus-1"},
    ).json()
    charge = client.post(
        "/v1/charges",
        json={"customer_id": customer["id"], "amount": 4_200, "currency": "usd"},
        headers={**auth, "Idempotency-Key": "charge-1"},
    )
    assert charge.status_code == 201, charge.text
    body = charge.json()
    assert (body["status"], body["gateway"]) == ("succeeded", gateway_id)
    state = shared_sim.state()["payment_intents"]["succeeded_by_command"]
    assert state[body["command_id"]] == 1
    RecoveryWorker(billkeep).drain()  # nothing left to do
    assert billkeep.queries.charge(_tenant, body["id"])["status"] == "succeeded"


def test_cli_creates_and_lists_without_printing_secrets(
    sqlite_url: str, billkeep: Billkeep
) -> None:
    tenant_id, _key = billkeep.tenants.create_tenant("cli tenant", 1_767_225_600_000)
    runner = CliRunner()
    env = {"BILLKEEP_DATABASE_URL": sqlite_url, "BILLKEEP_GATEWAY_API_KEY": API_KEY}
    created = runner.invoke(
        cli_app,
        ["gateways", "create", "--tenant", tenant_id, "--webhook-secret", WEBHOOK_SECRET,
         "--api-base", "http://127.0.0.1:9"],
        env=env,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    gateway = json.loads(created.stdout)
    listed = runner.invoke(cli_app, ["gateways", "list", "--tenant", tenant_id], env=env)
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [gateway["id"]]
    for output in (created.output, listed.output):
        assert API_KEY not in output and WEBHOOK_SECRET not in output
    missing = runner.invoke(
        cli_app,
        ["gateways", "list", "--tenant", tenant_id],
        env={"BILLKEEP_DATABASE_URL": sqlite_url},
    )
    assert missing.exit_code == 0


def test_postgres_without_a_server_key_refuses_to_start(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    with pytest.raises(SecretKeyMissing, match=SECRET_KEY_ENV):
        open_billkeep(pg_url)
    monkeypatch.setenv(SECRET_KEY_ENV, "k" * 40)
    open_billkeep(pg_url).close()


def test_another_server_key_cannot_read_the_secrets(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billkeep.gateways.crypto import SecretUnreadable
    from billkeep.runtime import enable_gateway_configs

    monkeypatch.setenv(SECRET_KEY_ENV, "a" * 40)
    first = open_billkeep(sqlite_url)
    tenant_id, _ = first.tenants.create_tenant("t", 1)
    result = first.execute(
        tenant_id, "gateway.create",
        {"kind": "stripe", "api_key": API_KEY, "webhook_secret": WEBHOOK_SECRET},
        idempotency_key="k1",
    )  # fmt: skip
    gateway_id = result.body()["id"]
    assert enable_gateway_configs(first).credentials(tenant_id, gateway_id).api_key == API_KEY
    first.close()
    monkeypatch.setenv(SECRET_KEY_ENV, "b" * 40)
    second = open_billkeep(sqlite_url)
    with pytest.raises(SecretUnreadable):
        enable_gateway_configs(second).credentials(tenant_id, gateway_id)
    second.close()
    monkeypatch.setenv(SECRET_KEY_ENV, f"{'b' * 40},{'a' * 40}")  # rotation: the old key decrypts
    third = open_billkeep(sqlite_url)
    assert enable_gateway_configs(third).credentials(tenant_id, gateway_id).api_key == API_KEY
    third.close()
