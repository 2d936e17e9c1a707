"""All tables, registered on one MetaData. Each area owns a module; importing this package loads all."""

from billkeep.storage.tables import billing, core, gateways, reconciliation
from billkeep.storage.tables.base import metadata

__all__ = ["billing", "core", "gateways", "metadata", "reconciliation"]
