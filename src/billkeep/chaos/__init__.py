"""Real-process chaos and soak harness: servers, workers and a faulty gateway simulator, all real
processes on one PostgreSQL database, with `kill -9` chaos and an invariant audit at the end."""

from billkeep.chaos.harness import ChaosConfig, ChaosReport, fault_plan, run_chaos

__all__ = ["ChaosConfig", "ChaosReport", "fault_plan", "run_chaos"]
