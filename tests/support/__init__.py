"""Shared test support: database provisioning for both engines."""
