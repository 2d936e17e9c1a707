"""A process dies between the payment and its record: Powertools (Redis) vs billkeep.

The same charge, the same crash (a forked child that `os._exit`s right after the gateway call),
then retries with the same idempotency key. Powertools' documented semantics: a retry is refused
while the INPROGRESS record lives (`expires_after_seconds`, no Lambda context), and once Redis
expires it the function runs again, so the gateway is asked to pay a second time (with a fresh
gateway key: a new payment). billkeep must pay exactly once and answer the retry.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aws_lambda_powertools.utilities.idempotency")  # needs boto3 too
redis = pytest.importorskip("redis")

from bench.compare_powertools import (  # noqa: E402
    BillkeepGuard,
    Blocked,
    PowertoolsGuard,
    prepare_billkeep,
    run_crashing,
)

from billkeep.engine.crashpoints import CRASH_EXIT_CODE  # noqa: E402

pytestmark = [
    pytest.mark.chaos,
    # Powertools' Redis layer is deprecated in name only (v4: CachePersistenceLayer, an alias);
    # outside Lambda it warns that no remaining time is known, which is the point here.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Couldn't determine the remaining time left:UserWarning"),
]

REDIS_URL = "redis://127.0.0.1:6379/0"
INTENTS = 3
EXPIRY_S = 3  # Powertools expires_after_seconds: long enough to retry inside it, short to wait out
LEASE_MS = 1_000  # billkeep's shortest lease: how long a dead attempt keeps its command
ANSWER_DEADLINE_S = 10.0
POLL_S = 0.1


def _redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture
def powertools(tmp_path: Path) -> Iterator[PowertoolsGuard]:
    if not _redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    guard = PowertoolsGuard(
        "pt",
        REDIS_URL,
        str(tmp_path / "gateway-pt.db"),
        key_prefix=f"billkeep-test-{uuid.uuid4().hex[:8]}",
        expires_after_seconds=EXPIRY_S,
    )
    yield guard
    guard.cleanup()


def _crash_first_attempts(guard: PowertoolsGuard | BillkeepGuard, intents: list[str]) -> None:
    for intent in intents:

        def first_attempt(intent: str = intent) -> str:
            return guard.charger(crash_after_effect=True)(intent)

        code = run_crashing(first_attempt)
        assert code == CRASH_EXIT_CODE, f"{intent}: the first attempt did not die after paying"


def _retry_until_answered(guard: PowertoolsGuard | BillkeepGuard, intent: str) -> str:
    charge = guard.charger(crash_after_effect=False)
    deadline = time.monotonic() + ANSWER_DEADLINE_S
    while True:
        try:
            return charge(intent)
        except Blocked:
            assert time.monotonic() < deadline, f"{intent}: still refused after the deadline"
            time.sleep(POLL_S)


def test_powertools_pays_again_once_the_inprogress_record_expires(
    powertools: PowertoolsGuard,
) -> None:
    intents = [f"pt-{uuid.uuid4().hex[:8]}-{n}" for n in range(INTENTS)]
    _crash_first_attempts(powertools, intents)
    assert powertools.payments(intents) == dict.fromkeys(intents, 1), "each crash paid once"
    assert powertools.recorded(intents) == 0, "the crash left only INPROGRESS records"
    ttls = powertools.inprogress_ttls_s()
    assert len(ttls) == INTENTS and all(0 < t <= EXPIRY_S for t in ttls)

    # Inside the record's life: refused, and nothing is paid.
    charge = powertools.charger(crash_after_effect=False)
    for intent in intents:
        with pytest.raises(Blocked):
            charge(intent)
    assert powertools.payments(intents) == dict.fromkeys(intents, 1)

    # After it: the function runs again and the gateway, given a fresh key, pays again.
    for intent in intents:
        _retry_until_answered(powertools, intent)
    assert powertools.payments(intents) == dict.fromkeys(intents, 2)
    assert powertools.recorded(intents) == INTENTS  # the second payment is the one recorded


def test_billkeep_resumes_and_pays_once(db_url: str, tmp_path: Path) -> None:
    gateway_path = str(tmp_path / "gateway-bk.db")
    tenant_id, customer_id = prepare_billkeep(db_url, gateway_path)
    guard = BillkeepGuard("bk", db_url, gateway_path, tenant_id, customer_id, LEASE_MS)
    intents = [f"bk-{uuid.uuid4().hex[:8]}-{n}" for n in range(INTENTS)]
    try:
        _crash_first_attempts(guard, intents)
        assert guard.payments(intents) == dict.fromkeys(intents, 1), "each crash paid once"
        assert guard.recorded(intents) == 0, "the crash came before the outcome was recorded"

        references = {intent: _retry_until_answered(guard, intent) for intent in intents}

        assert guard.payments(intents) == dict.fromkeys(intents, 1), "no duplicate payment"
        assert guard.recorded(intents) == INTENTS
        assert all(ref.startswith("pi_") for ref in references.values())
        assert len(set(references.values())) == INTENTS
        # A second retry replays the stored answer: the same payment.
        charge = guard.charger(crash_after_effect=False)
        assert {intent: charge(intent) for intent in intents} == references
    finally:
        guard.close()
