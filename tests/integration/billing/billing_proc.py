"""A billing worker process for the multi-process tests and benchmarks:

    python billing_proc.py DATABASE_URL GATEWAY_PATH NOW_MS AS_OF_MS[,AS_OF_MS...]

Runs one billing cycle per as_of (all tenants) with a fixed clock, printing each result.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from billkeep.billing.runs import run_billing_cycle
from billkeep.domain.clock import ManualClock
from billkeep.engine.service import Billkeep
from billkeep.gateways.fake import FakeGateway
from billkeep.gateways.protocol import StaticGatewayDirectory
from billkeep.storage.database import Database


def main(argv: list[str]) -> None:
    url, gateway_path, now_ms, as_of_list = argv[0], argv[1], int(argv[2]), argv[3]
    clock = ManualClock(now_ms)
    billkeep = Billkeep(
        Database(url), StaticGatewayDirectory(FakeGateway(gateway_path, clock=clock)), clock=clock
    )
    for as_of in as_of_list.split(","):
        result = run_billing_cycle(billkeep, int(as_of))
        print(result.as_dict(), flush=True)
    billkeep.close()


if __name__ == "__main__":
    main(sys.argv[1:])
