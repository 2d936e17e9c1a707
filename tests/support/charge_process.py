"""A separate process that submits one charge: the victim of crash tests.

Usage: python -m tests.support.charge_process URL GATEWAY_PATH TENANT CUSTOMER KEY AMOUNT
Environment: BILLKEEP_CRASH_AT (die at a phase boundary), CHARGE_PROCESS_SLOW_GATEWAY_S (the
gateway makes the payment, then hangs this long before answering: a window for kill -9).
"""

from __future__ import annotations

import os
import sys
import time

from billkeep.engine.service import Billkeep
from billkeep.engine.steps import EngineConfig
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import PaymentRequest, PaymentResult, StaticGatewayDirectory
from billkeep.storage.database import Database

CRASH_TEST_LEASE_MS = 1_000


class SlowAfterEffectGateway(FakeGateway):
    def create_payment(self, request: PaymentRequest) -> PaymentResult:
        result = super().create_payment(request)
        print("PAYMENT_MADE", flush=True)
        time.sleep(float(os.environ.get("CHARGE_PROCESS_SLOW_GATEWAY_S", "0")))
        return result


def main() -> None:
    url, gateway_path, tenant, customer, key, amount = sys.argv[1:7]
    bk = Billkeep(
        Database(url),
        StaticGatewayDirectory(SlowAfterEffectGateway(gateway_path)),
        config=EngineConfig(lease_ms=CRASH_TEST_LEASE_MS),
    )
    result = bk.create_charge(
        tenant, {"customer_id": customer, "amount": int(amount), "currency": "usd"}, key
    )
    print("RESULT", result.status, flush=True)


if __name__ == "__main__":
    main()
