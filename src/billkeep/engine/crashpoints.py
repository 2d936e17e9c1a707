"""Named crash points, for crash tests that need a real process death at an exact phase boundary.

Set `BILLKEEP_CRASH_AT` to a comma-separated list of point names (see executor: for example
`charge.create:payment_attempt_recorded:after_call`); the process then dies with `os._exit`
(no cleanup, no commit, like `kill -9`) when it reaches one. Unset, this costs one dict lookup.
"""

from __future__ import annotations

import os
import sys

__all__ = ["CRASH_ENV", "CRASH_EXIT_CODE", "crashpoint"]

CRASH_ENV = "BILLKEEP_CRASH_AT"
CRASH_EXIT_CODE = 137


def crashpoint(name: str) -> None:
    wanted = os.environ.get(CRASH_ENV)
    if wanted and name in wanted.split(","):
        sys.stderr.write(f"billkeep: crash point {name} reached, exiting\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
