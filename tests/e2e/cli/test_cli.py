"""The `billkeep` command as a user runs it: keys printed once on the last line, and every
failure a non-zero exit with a one-line reason (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BILLKEEP = str(Path(sys.executable).with_name("billkeep"))


def _run(*args: str, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BILLKEEP, *args],
        # Wide enough that tables and usage errors are not wrapped.
        env={**os.environ, "BILLKEEP_DATABASE_URL": f"sqlite:///{db}", "COLUMNS": "250", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_one_line_failure(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(expected in line for line in lines), result.stderr


def test_tenant_keys_lifecycle(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    created = _run("tenants", "create", "acme", db=db)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    tenant_id = key.removeprefix("bk_").rsplit("_", 1)[0]
    assert key.startswith(f"bk_{tenant_id}_")
    listed = _run("tenants", "keys", "list", tenant_id, db=db)
    assert listed.returncode == 0 and key[: len(f"bk_{tenant_id}_") + 6] in listed.stdout
    assert key not in listed.stdout  # only a prefix is shown; the key itself is not stored
    key_id = next(w for w in listed.stdout.split() if w.startswith("key_"))
    assert _run("tenants", "keys", "revoke", tenant_id, key_id, db=db).returncode == 0
    again = _run("tenants", "keys", "revoke", tenant_id, key_id, db=db)
    _assert_one_line_failure(again, "no active key")
    events = _run("events", "list", "--tenant", tenant_id, db=db)
    assert events.returncode == 0, events.stderr


def test_failures_end_with_a_one_line_reason(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    _assert_one_line_failure(_run("tenants", "keys", "list", "ten_nosuch", db=db), "no tenant")
    _assert_one_line_failure(
        _run("migrate", db=db, BILLKEEP_DATABASE_URL="mysql://nowhere/x"),
        "unsupported database URL",
    )
    created = _run("tenants", "create", "acme", db=db)
    tenant_id = created.stdout.strip().splitlines()[-1].removeprefix("bk_").rsplit("_", 1)[0]
    window = ("--from", "2026-01-01T00:00:00Z", "--to", "2026-02-01T00:00:00Z")
    _assert_one_line_failure(
        _run("reconcile", "--tenant", tenant_id, *window, db=db), "no configured gateway"
    )
    _assert_one_line_failure(
        _run("reconcile", "--tenant", tenant_id, "--from", "yesterday", "--to", "today", db=db),
        "Invalid value",
    )
