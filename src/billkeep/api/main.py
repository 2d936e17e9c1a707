"""The ASGI app factory uvicorn imports in each worker: `billkeep.api.main:app_from_env`.

Built from the environment (BILLKEEP_DATABASE_URL and the others in docs/api.md), because with
several workers each process builds its own app and its own database pool.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from billkeep.api.app import create_app
from billkeep.api.settings import ApiSettings

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    from billkeep.runtime import open_billkeep

    # The serve command migrates once before starting the workers; workers do not race to.
    migrate = os.environ.get("BILLKEEP_MIGRATE_ON_START", "1") == "1"
    return create_app(open_billkeep(migrate=migrate), ApiSettings.from_env())
