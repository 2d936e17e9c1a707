"""Payment gateways: the protocol the engine speaks, and its adapters (fake, Stripe, simulator)."""
