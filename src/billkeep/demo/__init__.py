"""`billkeep demo`: the main job. A burst of billing commands under faults, then proof from the data."""
