"""Plans and prices: parsing from API JSON and computing invoice lines.

Price types (`type` key in each price object; amounts in the plan currency's minor units):
- `flat {amount}`: a fixed fee. Its "quantity" is how many times it is charged, normally 1 per
  period.
- `per_unit {metric, unit_amount}`: quantity * unit_amount.
- `graduated {metric, tiers}`: each unit is priced by the tier it falls in; tier i covers
  quantities (up_to[i-1], up_to[i]] (inclusive upper bound, like Stripe). One line per touched
  tier, plus one line for the tier's flat_amount when it is non-zero.
- `volume {metric, tiers}`: ALL units are priced at the single tier the total quantity falls in,
  plus that tier's flat_amount.
- `package {metric, package_size, package_amount}`: charged per started package: a partial
  package is rounded UP (1..package_size units cost one package; package_size + 1 cost two).

Documented choices:
- Quantities are non-negative integers. Usage measured in fractions must be reported in integer
  units of the metric (e.g. MB rather than GB), so no rounding of usage ever happens here.
- Zero usage charges nothing, including tier flat amounts (a tier is "touched" only by at least one
  unit), and still yields one zero line so the invoice shows the metric was billed.
- Lines are computed with exact integers; a line or total above MAX_AMOUNT_MINOR (or a quantity
  above MAX_QUANTITY) raises BillingOverflow rather than storing an absurd amount.
- Unknown keys in a plan, price or tier are refused: a typo in money-defining configuration must
  not be silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from billkeep.domain.errors import BillkeepError, FieldError, ValidationFailed
from billkeep.domain.metrics import parse_metric_code
from billkeep.domain.money import MAX_AMOUNT_MINOR, parse_amount_minor, parse_currency
from billkeep.domain.periods import (
    Interval,
    parse_interval,
    parse_interval_count,
    parse_trial_days,
)

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "MAX_PACKAGE_SIZE",
    "MAX_PLAN_NAME_LENGTH",
    "MAX_PRICES_PER_PLAN",
    "MAX_QUANTITY",
    "MAX_TIERS",
    "PLAN_CODE_MAX_LENGTH",
    "PRICE_TYPES",
    "BillingOverflow",
    "FlatPrice",
    "GraduatedPrice",
    "InvoiceLine",
    "PackagePrice",
    "PerUnitPrice",
    "Plan",
    "Price",
    "PriceType",
    "Tier",
    "VolumePrice",
    "lines_total_minor",
    "parse_plan",
    "parse_price",
    "price_lines",
    "price_metric",
]

PriceType = Literal["flat", "per_unit", "graduated", "volume", "package"]
PRICE_TYPES: tuple[PriceType, ...] = ("flat", "per_unit", "graduated", "volume", "package")

MAX_PRICES_PER_PLAN = 20
MAX_TIERS = 50
PLAN_CODE_MAX_LENGTH = 64
MAX_PLAN_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 200
# Quantities share the amount bound: anything larger is a metering bug, and it keeps a quantity in
# a signed 64-bit column.
MAX_QUANTITY = 10**15
MAX_PACKAGE_SIZE = 10**9

_PLAN_CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_PLAN_KEYS = frozenset(
    {"code", "name", "currency", "interval", "interval_count", "trial_days", "prices"}
)
_TIER_KEYS = frozenset({"up_to", "unit_amount", "flat_amount"})
_PRICE_KEYS: dict[str, frozenset[str]] = {
    "flat": frozenset({"type", "description", "amount"}),
    "per_unit": frozenset({"type", "description", "metric", "unit_amount"}),
    "graduated": frozenset({"type", "description", "metric", "tiers"}),
    "volume": frozenset({"type", "description", "metric", "tiers"}),
    "package": frozenset({"type", "description", "metric", "package_size", "package_amount"}),
}

_T = TypeVar("_T")


class BillingOverflow(BillkeepError):
    """A computed quantity or amount is beyond what billkeep stores; nothing is billed."""

    code = "amount_too_large"
    status = 422
    title = "Computed amount exceeds the supported maximum"


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tier:
    """A pricing tier; `up_to` is inclusive, None for the last (unbounded) tier."""

    up_to: int | None
    unit_amount_minor: int
    flat_amount_minor: int = 0


@dataclass(frozen=True, slots=True)
class FlatPrice:
    amount_minor: int
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PerUnitPrice:
    metric: str
    unit_amount_minor: int
    description: str | None = None


@dataclass(frozen=True, slots=True)
class GraduatedPrice:
    metric: str
    tiers: tuple[Tier, ...]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class VolumePrice:
    metric: str
    tiers: tuple[Tier, ...]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PackagePrice:
    metric: str
    package_size: int
    package_amount_minor: int
    description: str | None = None


Price = FlatPrice | PerUnitPrice | GraduatedPrice | VolumePrice | PackagePrice


@dataclass(frozen=True, slots=True)
class Plan:
    code: str
    name: str
    currency: str
    interval: Interval
    interval_count: int
    trial_days: int
    prices: tuple[Price, ...]


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One invoice line; amounts in the plan currency's minor units."""

    description: str
    quantity: int
    unit_amount_minor: int
    amount_minor: int


def price_metric(price: Price) -> str | None:
    """The metric whose aggregate is the price's quantity (None for a flat fee)."""
    return None if isinstance(price, FlatPrice) else price.metric


# --- parsing helpers -----------------------------------------------------------------------------


def _collecting(errors: list[FieldError], parse: Callable[[], _T]) -> _T | None:
    """Run one field's parser, recording its errors so every bad field is reported at once."""
    try:
        return parse()
    except ValidationFailed as exc:
        errors.extend(exc.errors)
        return None


def _require_object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationFailed.single(field, "must be a JSON object")
    return value


def _refuse_unknown_keys(
    obj: Mapping[str, Any], allowed: frozenset[str], prefix: str, errors: list[FieldError]
) -> None:
    for key in sorted(str(k) for k in obj if k not in allowed):
        errors.append(FieldError(f"{prefix}{key}", "unknown field"))


def _parse_text(value: Any, field: str, max_length: int, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise ValidationFailed.single(
            field, f"must be a non-blank string of at most {max_length} characters"
        )
    return value


def _parse_plan_code(value: Any, field: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) > PLAN_CODE_MAX_LENGTH
        or _PLAN_CODE_PATTERN.fullmatch(value) is None
    ):
        raise ValidationFailed.single(
            field,
            f"must be 1..{PLAN_CODE_MAX_LENGTH} characters of A-Z a-z 0-9 _ . : - "
            "starting with a letter or digit",
        )
    return value


def _parse_positive_int(value: Any, field: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed.single(field, "must be an integer")
    if not 1 <= value <= maximum:
        raise ValidationFailed.single(field, f"must be between 1 and {maximum}")
    return value


def _parse_list(value: Any, field: str, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        raise ValidationFailed.single(field, "must be a JSON array")
    if not 1 <= len(value) <= maximum:
        raise ValidationFailed.single(field, f"must have 1..{maximum} items")
    return value


# --- tiers ---------------------------------------------------------------------------------------


def _parse_up_to(tier: Mapping[str, Any], is_last: bool, field: str) -> int | None:
    if "up_to" not in tier:
        raise ValidationFailed.single(field, "is required (null for the last tier)")
    value = tier["up_to"]
    if is_last:
        if value is not None:
            raise ValidationFailed.single(field, "must be null in the last tier")
        return None
    if value is None:
        raise ValidationFailed.single(field, "may only be null in the last tier")
    return _parse_positive_int(value, field, MAX_QUANTITY)


def _parse_tier_amount(value: Any, field: str) -> int:
    # Zero is meaningful in a tier: a free allowance, or a tier charged only by its flat fee.
    return parse_amount_minor(value, field, allow_zero=True)


def _parse_tier(value: Any, is_last: bool, prefix: str, errors: list[FieldError]) -> Tier | None:
    tier = _collecting(errors, lambda: _require_object(value, prefix.rstrip(".")))
    if tier is None:
        return None
    before = len(errors)
    _refuse_unknown_keys(tier, _TIER_KEYS, prefix, errors)
    up_to = _collecting(errors, lambda: _parse_up_to(tier, is_last, f"{prefix}up_to"))
    unit = _collecting(
        errors,
        lambda: _parse_tier_amount(tier.get("unit_amount"), f"{prefix}unit_amount"),
    )
    # flat_amount is optional: absent means no flat fee for the tier.
    flat = _collecting(
        errors,
        lambda: _parse_tier_amount(tier.get("flat_amount", 0), f"{prefix}flat_amount"),
    )
    if len(errors) > before or unit is None or flat is None:
        return None
    return Tier(up_to=up_to, unit_amount_minor=unit, flat_amount_minor=flat)


def _parse_tiers(value: Any, field: str) -> tuple[Tier, ...]:
    items = _parse_list(value, field, MAX_TIERS)
    errors: list[FieldError] = []
    tiers: list[Tier | None] = [
        _parse_tier(item, index == len(items) - 1, f"{field}[{index}].", errors)
        for index, item in enumerate(items)
    ]
    previous_up_to = 0
    for index, tier in enumerate(tiers):
        if tier is None or tier.up_to is None:
            continue
        if tier.up_to <= previous_up_to:
            errors.append(
                FieldError(f"{field}[{index}].up_to", f"must be greater than {previous_up_to}")
            )
        previous_up_to = max(previous_up_to, tier.up_to)
    if errors:
        raise ValidationFailed(errors)
    parsed = tuple(tier for tier in tiers if tier is not None)
    assert parsed[-1].up_to is None, "the last tier is unbounded"
    return parsed


# --- prices --------------------------------------------------------------------------------------


def _parse_price_type(value: Any, field: str) -> PriceType:
    for price_type in PRICE_TYPES:
        if value == price_type:
            return price_type
    raise ValidationFailed.single(field, f"must be one of {', '.join(PRICE_TYPES)}")


def _build_price(
    price_type: PriceType, obj: Mapping[str, Any], prefix: str, errors: list[FieldError]
) -> Price | None:
    def get(parse: Callable[[], _T]) -> _T | None:
        return _collecting(errors, parse)

    description = get(
        lambda: _parse_text(
            obj.get("description"), f"{prefix}description", MAX_DESCRIPTION_LENGTH, optional=True
        )
    )
    if price_type == "flat":
        amount = get(lambda: parse_amount_minor(obj.get("amount"), f"{prefix}amount"))
        return None if amount is None else FlatPrice(amount, description)
    metric = get(lambda: parse_metric_code(obj.get("metric"), f"{prefix}metric"))
    if price_type == "per_unit":
        unit = get(
            lambda: parse_amount_minor(
                obj.get("unit_amount"), f"{prefix}unit_amount", allow_zero=True
            )
        )
        if metric is None or unit is None:
            return None
        return PerUnitPrice(metric, unit, description)
    if price_type == "package":
        size = get(
            lambda: _parse_positive_int(
                obj.get("package_size"), f"{prefix}package_size", MAX_PACKAGE_SIZE
            )
        )
        amount = get(
            lambda: parse_amount_minor(obj.get("package_amount"), f"{prefix}package_amount")
        )
        if metric is None or size is None or amount is None:
            return None
        return PackagePrice(metric, size, amount, description)
    tiers = get(lambda: _parse_tiers(obj.get("tiers"), f"{prefix}tiers"))
    if metric is None or tiers is None:
        return None
    if price_type == "graduated":
        return GraduatedPrice(metric, tiers, description)
    return VolumePrice(metric, tiers, description)


def parse_price(value: Any, field: str = "price") -> Price:
    """One price object; errors name fields below `field` (e.g. `prices[2].tiers[0].up_to`)."""
    obj = _require_object(value, field)
    price_type = _parse_price_type(obj.get("type"), f"{field}.type")
    errors: list[FieldError] = []
    prefix = f"{field}."
    _refuse_unknown_keys(obj, _PRICE_KEYS[price_type], prefix, errors)
    price = _build_price(price_type, obj, prefix, errors)
    if errors:
        raise ValidationFailed(errors)
    assert price is not None, "a price without errors is complete"
    return price


def _parse_prices(value: Any, field: str) -> tuple[Price, ...]:
    items = _parse_list(value, field, MAX_PRICES_PER_PLAN)
    errors: list[FieldError] = []
    prices: list[Price | None] = []
    for index, item in enumerate(items):
        try:
            prices.append(parse_price(item, f"{field}[{index}]"))
        except ValidationFailed as exc:
            errors.extend(exc.errors)
    if errors:
        raise ValidationFailed(errors)
    return tuple(price for price in prices if price is not None)


def parse_plan(body: Any) -> Plan:
    """A plan from the `POST /v1/plans` body; every invalid field is reported at once."""
    obj = _require_object(body, "body")
    errors: list[FieldError] = []
    _refuse_unknown_keys(obj, _PLAN_KEYS, "", errors)
    code = _collecting(errors, lambda: _parse_plan_code(obj.get("code"), "code"))
    name = _collecting(errors, lambda: _parse_text(obj.get("name"), "name", MAX_PLAN_NAME_LENGTH))
    currency = _collecting(errors, lambda: parse_currency(obj.get("currency"), "currency"))
    interval = _collecting(errors, lambda: parse_interval(obj.get("interval"), "interval"))
    interval_count = _collecting(
        errors, lambda: parse_interval_count(obj.get("interval_count"), "interval_count")
    )
    trial_days = _collecting(errors, lambda: parse_trial_days(obj.get("trial_days"), "trial_days"))
    prices = _collecting(errors, lambda: _parse_prices(obj.get("prices"), "prices"))
    if errors:
        raise ValidationFailed(errors)
    assert code is not None and name is not None and currency is not None
    assert interval is not None and interval_count is not None and trial_days is not None
    assert prices is not None
    return Plan(code, name, currency, interval, interval_count, trial_days, prices)


# --- invoice lines -------------------------------------------------------------------------------


def _line(description: str, quantity: int, unit_amount_minor: int) -> InvoiceLine:
    amount_minor = quantity * unit_amount_minor
    if amount_minor > MAX_AMOUNT_MINOR:
        raise BillingOverflow(
            f"line {description!r}: {quantity} x {unit_amount_minor} exceeds {MAX_AMOUNT_MINOR}"
        )
    return InvoiceLine(description, quantity, unit_amount_minor, amount_minor)


def _tier_range(lower: int, up_to: int | None) -> str:
    return f"{lower + 1}+" if up_to is None else f"{lower + 1}-{up_to}"


def _graduated_lines(price: GraduatedPrice, label: str, quantity: int) -> list[InvoiceLine]:
    lines: list[InvoiceLine] = []
    lower = 0
    units_priced = 0
    for number, tier in enumerate(price.tiers, start=1):
        in_tier = quantity - lower if tier.up_to is None else min(quantity, tier.up_to) - lower
        if in_tier <= 0:
            break  # tiers are increasing: no later tier is touched either
        tier_label = f"{label} tier {number} ({_tier_range(lower, tier.up_to)})"
        lines.append(_line(tier_label, in_tier, tier.unit_amount_minor))
        units_priced += in_tier
        if tier.flat_amount_minor:
            lines.append(_line(f"{tier_label} flat fee", 1, tier.flat_amount_minor))
        if tier.up_to is None:
            break
        lower = tier.up_to
    assert units_priced == quantity, "every unit is priced by exactly one tier"
    return lines


def _volume_tier(tiers: tuple[Tier, ...], quantity: int) -> tuple[int, Tier, int]:
    """(1-based tier number, tier, lower bound) of the tier whose range holds `quantity`."""
    lower = 0
    for number, tier in enumerate(tiers, start=1):
        if tier.up_to is None or quantity <= tier.up_to:
            return number, tier, lower
        lower = tier.up_to
    raise AssertionError("the last tier is unbounded, so some tier holds every quantity")


def _volume_lines(price: VolumePrice, label: str, quantity: int) -> list[InvoiceLine]:
    number, tier, lower = _volume_tier(price.tiers, quantity)
    tier_label = f"{label} tier {number} ({_tier_range(lower, tier.up_to)})"
    lines = [_line(tier_label, quantity, tier.unit_amount_minor)]
    if tier.flat_amount_minor:
        lines.append(_line(f"{tier_label} flat fee", 1, tier.flat_amount_minor))
    return lines


def _package_lines(price: PackagePrice, label: str, quantity: int) -> list[InvoiceLine]:
    packages = -(-quantity // price.package_size)  # ceiling: a started package is a package
    description = f"{label} ({quantity} units in packages of {price.package_size})"
    return [_line(description, packages, price.package_amount_minor)]


def price_lines(price: Price, quantity: int) -> list[InvoiceLine]:
    """Invoice lines for `quantity` of `price` (quantity: the metric's aggregate for the period,
    or for a flat fee the number of times it is charged, normally 1)."""
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
        raise ValueError("quantity must be a non-negative int")
    if quantity > MAX_QUANTITY:
        raise BillingOverflow(f"quantity {quantity} exceeds {MAX_QUANTITY}")
    label = price.description or ("Flat fee" if isinstance(price, FlatPrice) else price.metric)
    if quantity == 0:
        return [InvoiceLine(label, 0, _unit_amount_at_zero(price), 0)]
    if isinstance(price, FlatPrice):
        lines = [_line(label, quantity, price.amount_minor)]
    elif isinstance(price, PerUnitPrice):
        lines = [_line(label, quantity, price.unit_amount_minor)]
    elif isinstance(price, GraduatedPrice):
        lines = _graduated_lines(price, label, quantity)
    elif isinstance(price, VolumePrice):
        lines = _volume_lines(price, label, quantity)
    else:
        lines = _package_lines(price, label, quantity)
    lines_total_minor(lines)  # raises when the lines together exceed the maximum
    return lines


def _unit_amount_at_zero(price: Price) -> int:
    """The unit price a zero line shows: the first unit's price."""
    if isinstance(price, FlatPrice):
        return price.amount_minor
    if isinstance(price, PerUnitPrice):
        return price.unit_amount_minor
    if isinstance(price, PackagePrice):
        return price.package_amount_minor
    return price.tiers[0].unit_amount_minor


def lines_total_minor(lines: Sequence[InvoiceLine]) -> int:
    """Sum of line amounts; BillingOverflow when it exceeds MAX_AMOUNT_MINOR."""
    total_minor = sum(line.amount_minor for line in lines)
    if total_minor > MAX_AMOUNT_MINOR:
        raise BillingOverflow(f"total {total_minor} exceeds {MAX_AMOUNT_MINOR}")
    return total_minor
