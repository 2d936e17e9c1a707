"""The HTTP API: a thin FastAPI layer over the engine (`Billkeep`). See docs/api.md."""

__all__: list[str] = []
