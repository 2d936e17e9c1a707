"""Reconciliation in the simulation: runs through the command path, gateway activity billkeep did
not cause, and the I4 audit against the gateway's store (see `extension`)."""

from __future__ import annotations

from billkeep.sim.extension import register_extension
from billkeep.sim.extensions.reconciliation import mutation as _mutation  # noqa: F401
from billkeep.sim.extensions.reconciliation.extension import ReconciliationExtension

__all__ = ["ReconciliationExtension"]

register_extension("reconciliation", ReconciliationExtension)
