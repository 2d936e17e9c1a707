"""Named crash points, for crash tests that need a real process death at an exact phase boundary.

Set `BILLKEEP_CRASH_AT` to a comma-separated list of point names (see executor: for example
`charge.create:payment_attempt_recorded:after_call`); the process then dies with `os._exit`
(no cleanup, no commit, like `kill -9`) when it reaches one. Unset, this costs one dict lookup.

In-process harnesses (the deterministic simulation) may instead install `crash_hook`, called with
every point name: it can raise to abandon the command at that boundary (the database is kept,
in-memory state is thrown away) or hand control to another logical actor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["CRASH_ENV", "CRASH_EXIT_CODE", "crash_hook", "crashpoint", "set_crash_hook"]

CRASH_ENV = "BILLKEEP_CRASH_AT"
CRASH_EXIT_CODE = 137

crash_hook: Callable[[str], None] | None = None


def set_crash_hook(hook: Callable[[str], None] | None) -> None:
    """Install (or with None remove) the in-process hook called at every crash point."""
    global crash_hook
    crash_hook = hook


def crashpoint(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)
    wanted = os.environ.get(CRASH_ENV)
    if wanted and name in wanted.split(","):
        sys.stderr.write(f"billkeep: crash point {name} reached, exiting\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
