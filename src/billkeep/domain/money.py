"""Money as integer minor units of an ISO 4217 currency.

Floats never enter: parsing rejects them (and booleans and numeric strings), and arithmetic is
only defined within one currency, so a mixed-currency sum is a bug that fails loudly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import iso4217

from billkeep.domain.errors import FieldError, ValidationFailed

__all__ = [
    "MAX_AMOUNT_MINOR",
    "Money",
    "allocate_largest_remainder",
    "currency_exponent",
    "parse_amount_minor",
    "parse_currency",
]

# Amounts above this are rejected everywhere: it keeps every sum of a realistic number of amounts
# far inside a signed 64-bit column, and matches the API contract (amounts over 10^15 -> 422).
MAX_AMOUNT_MINOR = 10**15


def _known_currencies() -> dict[str, int]:
    known: dict[str, int] = {}
    for currency in iso4217.Currency:
        # Funds codes and metals (XAU, XDR, ...) have no minor unit: they are not money one charges.
        if currency.exponent is not None:
            known[currency.code.lower()] = int(currency.exponent)
    return known


_EXPONENTS: dict[str, int] = _known_currencies()


def currency_exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit (2 for usd, 0 for jpy)."""
    exponent = _EXPONENTS.get(currency)
    if exponent is None:
        raise ValidationFailed.single("currency", f"unknown ISO 4217 currency {currency!r}")
    return exponent


def parse_currency(value: Any, field: str = "currency") -> str:
    """A lowercase ISO 4217 code with a minor unit; anything else is a ValidationFailed."""
    if not isinstance(value, str):
        raise ValidationFailed.single(field, "must be a lowercase ISO 4217 currency code string")
    if value != value.strip() or value != value.lower() or len(value) != 3:
        raise ValidationFailed.single(
            field, f"must be a lowercase 3-letter ISO 4217 code: {value!r}"
        )
    if value not in _EXPONENTS:
        raise ValidationFailed.single(field, f"unknown ISO 4217 currency {value!r}")
    return value


def parse_amount_minor(
    value: Any, field: str = "amount", *, allow_zero: bool = False, allow_negative: bool = False
) -> int:
    """An integer amount in minor units; floats, bools, strings and out-of-range values are refused."""
    # bool is a subclass of int: exclude it first, or `true` would become 1 cent.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed.single(field, "must be an integer number of minor units")
    if abs(value) > MAX_AMOUNT_MINOR:
        raise ValidationFailed.single(
            field, f"must not exceed {MAX_AMOUNT_MINOR} in absolute value"
        )
    if value < 0 and not allow_negative:
        raise ValidationFailed.single(field, "must not be negative")
    if value == 0 and not allow_zero:
        raise ValidationFailed.single(field, "must be greater than zero")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: `amount_minor` units of the currency's minor unit (cents for usd)."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError("Money.amount_minor must be an int")
        if self.currency not in _EXPONENTS:
            raise ValueError(f"unknown currency {self.currency!r}")
        if abs(self.amount_minor) > MAX_AMOUNT_MINOR * 1000:
            # Sums of many amounts may exceed a single amount's limit, but never by this much.
            raise OverflowError("Money amount out of range")

    @classmethod
    def parse(cls, amount: Any, currency: Any, *, allow_zero: bool = False) -> Money:
        """Build from untrusted input with the API's rules (see parse_amount_minor)."""
        errors: list[FieldError] = []
        parsed_currency = ""
        parsed_amount = 0
        try:
            parsed_amount = parse_amount_minor(amount, allow_zero=allow_zero)
        except ValidationFailed as exc:
            errors.extend(exc.errors)
        try:
            parsed_currency = parse_currency(currency)
        except ValidationFailed as exc:
            errors.extend(exc.errors)
        if errors:
            raise ValidationFailed(errors)
        return cls(parsed_amount, parsed_currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount_minor <= other.amount_minor

    def multiply(self, factor: int) -> Money:
        """Multiply by an integer quantity; fractional factors go through allocate()."""
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise TypeError("Money can only be multiplied by an int")
        return Money(self.amount_minor * factor, self.currency)

    def allocate(self, weights: Sequence[int]) -> list[Money]:
        """Split into parts proportional to weights, losing no minor unit."""
        parts = allocate_largest_remainder(self.amount_minor, weights)
        return [Money(part, self.currency) for part in parts]

    def __str__(self) -> str:
        exponent = _EXPONENTS[self.currency]
        sign = "-" if self.amount_minor < 0 else ""
        units, minor = divmod(abs(self.amount_minor), 10**exponent)
        fraction = f".{minor:0{exponent}d}" if exponent else ""
        return f"{sign}{units}{fraction} {self.currency.upper()}"


def allocate_largest_remainder(total_minor: int, weights: Sequence[int]) -> list[int]:
    """Split `total_minor` proportionally to integer `weights` (Hamilton's method).

    Every part is floor(total * w / sum); the units left over go, one each, to the parts with the
    largest remainders (ties to the earliest part), so the parts always sum to the total exactly.
    """
    if not weights:
        raise ValueError("allocate needs at least one weight")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in weights):
        raise ValueError("weights must be non-negative integers")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("weights must not all be zero")
    sign = -1 if total_minor < 0 else 1
    magnitude = abs(total_minor)
    quotients = [divmod(magnitude * w, weight_sum) for w in weights]
    parts = [q for q, _ in quotients]
    leftover = magnitude - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-quotients[i][1], i))
    for index in order[:leftover]:
        parts[index] += 1
    assert sum(parts) == magnitude, "allocation must conserve the total"
    return [sign * part for part in parts]
