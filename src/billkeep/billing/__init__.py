"""Subscriptions and usage-based billing on top of the exactly-once engine (see docs/billing.md)."""
