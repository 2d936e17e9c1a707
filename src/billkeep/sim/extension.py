"""How a part of the simulation plugs into the runner: its actions, its audit, its recovery.

The core runner drives charges and refunds. Each further capability (webhook delivery,
reconciliation, usage and billing runs) is a `SimExtension`: it sets up what it needs, offers
weighted actions the seeded workload picks from, checks its invariants after every step and at
the end, and takes part in recovery once faults stop. Extensions see the simulation through
`SimWorld` (the runner implements it), never each other.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from billkeep.domain.clock import ManualClock
from billkeep.engine.service import Billkeep
from billkeep.gateways.simulator import SimulatorCore
from billkeep.sim.faults import FaultProfile
from billkeep.sim.gateway import GatewayRecords
from billkeep.sim.history import ClientHistory
from billkeep.sim.scheduler import Actor, Scheduler
from billkeep.storage.database import Database

if TYPE_CHECKING:
    from billkeep.sim.auditor import Violation

__all__ = [
    "EXTENSION_FACTORIES",
    "ExtensionFactory",
    "SimAction",
    "SimExtension",
    "SimWorld",
    "register_extension",
]


@dataclass(frozen=True)
class SimAction:
    """One workload action: chosen with `weight` among the actions whose `available()` is true."""

    name: str
    weight: float
    available: Callable[[], bool]
    run: Callable[[], None]


class SimWorld(Protocol):
    """What an extension may use of the running simulation."""

    seed: int
    db: Database
    bk: Billkeep
    clock: ManualClock
    core: SimulatorCore
    scheduler: Scheduler
    profile: FaultProfile
    records: GatewayRecords
    history: ClientHistory
    tenants: list[str]
    customers: dict[str, list[str]]

    @property
    def faults_on(self) -> bool:
        """False once faults stop (recovery and the final audit run calm)."""
        ...

    def rng_for(self, stream: str) -> random.Random:
        """An independent seeded stream (one per purpose keeps runs comparable)."""
        ...

    def note(self, line: str) -> None:
        """Append a line to the trace (time-stamped)."""
        ...

    def spawn_actor(self, name: str, body: Callable[[], object]) -> Actor:
        """Start a logical actor and run it to its first park, crash or end."""
        ...

    def run_to_end(self, actor: Actor) -> None: ...

    def next_number(self, what: str) -> int:
        """1, 2, 3... per `what` (actor names, keys)."""
        ...


class SimExtension(Protocol):
    name: str

    def setup(self) -> None:
        """After tenants and customers exist, before the faulty phase (no faults here)."""
        ...

    def actions(self) -> Sequence[SimAction]: ...

    def check_safety(self) -> list[Violation]:
        """Invariants that hold after every step, faults or not."""
        ...

    def recover(self) -> bool:
        """One recovery pass once faults stop; True when it did work (the runner repeats passes,
        bounded, until no extension does work and every command is final)."""
        ...

    def check_final(self) -> list[Violation]:
        """Liveness and agreement, after recovery and the clients' last asks."""
        ...

    def stats(self) -> dict[str, int]: ...


ExtensionFactory = Callable[[SimWorld], SimExtension]
# The extensions of a run, built in this (registration) order so their seeded choices stay
# deterministic. Modules of `billkeep.sim.extensions` add theirs when that package is imported.
EXTENSION_FACTORIES: list[tuple[str, ExtensionFactory]] = []


def register_extension(name: str, factory: ExtensionFactory) -> None:
    assert name not in {n for n, _ in EXTENSION_FACTORIES}, f"extension {name} registered twice"
    EXTENSION_FACTORIES.append((name, factory))
