"""Billing commands, each an Operation run by the executor."""
