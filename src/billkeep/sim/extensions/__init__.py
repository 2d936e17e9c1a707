"""The simulation's extensions beyond charges and refunds. Importing this package registers
each of them (see `billkeep.sim.extension.register_extension`), in a fixed order."""

from __future__ import annotations

from billkeep.sim.extensions import billing as _billing  # noqa: F401  (registers "billing")
from billkeep.sim.extensions import reconciliation as _reconciliation  # noqa: F401
from billkeep.sim.extensions import webhooks as _webhooks  # noqa: F401  (registers "webhooks")

__all__: list[str] = []
