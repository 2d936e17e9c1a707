"""Usage events, billing runs, invoices and dunning in the simulation (extension "billing"), with
its audit (I6, I9, invoice amounts) and the `invoice_unique` mutation."""

from __future__ import annotations

from billkeep.sim.extension import register_extension
from billkeep.sim.extensions.billing.mutation import INVOICE_UNIQUE
from billkeep.sim.extensions.billing.workload import BillingExtension
from billkeep.sim.mutations import register_mutation

__all__ = ["BillingExtension"]

register_extension("billing", BillingExtension)
register_mutation(INVOICE_UNIQUE)
