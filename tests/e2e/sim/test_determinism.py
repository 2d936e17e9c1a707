"""One seed, one run: the same seed reproduces the same trace and the same data, byte for byte,
in this process and in another one (with a different hash seed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from billkeep.sim.runner import SimOptions, run_seed

STEPS = 30
_CLI = "from billkeep.cli.main import app; app()"


def test_same_seed_twice_gives_the_same_digests() -> None:
    first = run_seed(SimOptions(seed=7, steps=STEPS))
    second = run_seed(SimOptions(seed=7, steps=STEPS))
    assert first.trace == second.trace
    assert (first.trace_digest, first.db_digest, first.gateway_digest) == (
        second.trace_digest,
        second.db_digest,
        second.gateway_digest,
    )


def test_different_seeds_differ() -> None:
    one = run_seed(SimOptions(seed=8, steps=STEPS))
    other = run_seed(SimOptions(seed=9, steps=STEPS))
    assert one.trace_digest != other.trace_digest
    assert one.db_digest != other.db_digest


def _cli_digests(hash_seed: str) -> tuple[str, ...]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", _CLI, "sim", "--seed", "11", "--steps", "20"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    digests = re.findall(r"digest\s+([0-9a-f]{16})", out.stdout)
    assert len(digests) == 3, out.stdout
    return tuple(digests)


def test_cli_reproduces_a_seed_across_processes() -> None:
    assert _cli_digests("1") == _cli_digests("2")
