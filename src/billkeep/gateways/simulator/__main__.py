"""`python -m billkeep.gateways.simulator --port 12111 --db sim.db ...`"""

from __future__ import annotations

import argparse

from billkeep.gateways.simulator.server import ServerConfig, run_server

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(prog="python -m billkeep.gateways.simulator")
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--db", default=defaults.db)
    parser.add_argument("--webhook-url")
    parser.add_argument("--webhook-secret")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--fee-percent", default=defaults.fee_percent)
    parser.add_argument("--fee-fixed", type=int, default=defaults.fee_fixed)
    parser.add_argument("--async-settle-ms", type=int, default=defaults.async_settle_ms)
    parser.add_argument("--webhook-max-attempts", type=int, default=defaults.webhook_max_attempts)
    parser.add_argument("--webhook-retry-base-ms", type=int, default=defaults.webhook_retry_base_ms)
    parser.add_argument("--poll-interval-ms", type=int, default=defaults.poll_interval_ms)
    args = parser.parse_args(argv)
    return ServerConfig(
        host=args.host,
        port=args.port,
        db=args.db,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        seed=args.seed,
        fee_percent=args.fee_percent,
        fee_fixed=args.fee_fixed,
        async_settle_ms=args.async_settle_ms,
        webhook_max_attempts=args.webhook_max_attempts,
        webhook_retry_base_ms=args.webhook_retry_base_ms,
        poll_interval_ms=args.poll_interval_ms,
    )


def main(argv: list[str] | None = None) -> None:
    run_server(parse_args(argv))


if __name__ == "__main__":
    main()
