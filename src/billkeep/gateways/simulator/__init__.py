"""A stateful, fault-injecting gateway that speaks a subset of Stripe's wire protocol.

`SimulatorCore` holds the behaviour (usable in-process, without HTTP); `create_app` wraps it in a
Starlette app; `run_server` serves it with uvicorn. See docs/gateway-simulator.md.
"""

from __future__ import annotations

from billkeep.gateways.simulator.core import BulkResult, SimConfig, SimulatorCore
from billkeep.gateways.simulator.result import SimResponse
from billkeep.gateways.simulator.store import SimStore

__all__ = ["BulkResult", "SimConfig", "SimResponse", "SimStore", "SimulatorCore"]
