"""Reconciliation: compare what the gateway did with what the ledger holds, classify the breaks and
propose the heals that are safe to apply automatically (invariant I4).

`matching` is the pure, streaming classifier; fetching records and applying heals live elsewhere.
"""
