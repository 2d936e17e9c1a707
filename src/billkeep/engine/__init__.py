"""The engine: the service layer that runs commands exactly once on top of storage and gateways."""
