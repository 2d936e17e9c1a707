"""billkeep: a billing transaction engine with exactly-once financial effects."""

from billkeep.domain.money import Money

__all__ = ["Money", "__version__"]

__version__ = "0.1.0"
