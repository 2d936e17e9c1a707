"""Processing fees in integer math: a percentage parsed exactly, rounded half up, plus a fixed part."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = ["FeeSchedule", "parse_fee_percent"]

_PPM_PER_PERCENT = 10_000  # parts per million in one percent
_PPM = 1_000_000


def parse_fee_percent(text: str) -> int:
    """'2.9' -> 29_000 parts per million; at most four decimals, so the value stays exact."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"fee percent is not a decimal number: {text!r}") from exc
    if not value.is_finite() or value < 0 or value > 100:
        raise ValueError(f"fee percent must be within 0..100: {text!r}")
    ppm = value * _PPM_PER_PERCENT
    if ppm != ppm.to_integral_value():
        raise ValueError(f"fee percent has more than four decimals: {text!r}")
    return int(ppm)


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    percent_ppm: int = 29_000
    fixed_minor: int = 30

    @classmethod
    def from_text(cls, percent: str, fixed_minor: int) -> FeeSchedule:
        if fixed_minor < 0:
            raise ValueError("fixed fee must not be negative")
        return cls(parse_fee_percent(percent), fixed_minor)

    def fee_for(self, amount_minor: int) -> int:
        """Fee on a charge: percentage rounded half up to the minor unit, plus the fixed part,
        never more than the charge itself (Stripe never nets a charge below zero)."""
        assert amount_minor >= 0, "fees apply to charge amounts"
        percentage_minor = (amount_minor * self.percent_ppm + _PPM // 2) // _PPM
        return min(amount_minor, percentage_minor + self.fixed_minor)
