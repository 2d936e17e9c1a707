"""SimulatorStoreSource reads only the fields it needs, in SQLite: its records must equal the
ones the Stripe mappings make from the full objects, for every kind of payment and fee."""

from __future__ import annotations

from pathlib import Path

from billkeep.domain.clock import ManualClock
from billkeep.gateways.simulator import SimConfig, SimStore, SimulatorCore
from billkeep.gateways.simulator.params import (
    form_from_json,
    parse_dispute_create,
    parse_payment_intent_create,
    parse_refund_create,
)
from billkeep.gateways.simulator.store import ListWindow
from billkeep.reconciliation.matching import GatewayStatus
from billkeep.reconciliation.money_out_records import ReversalKind, ReversalStatus
from billkeep.reconciliation.sources import (
    SimulatorStoreSource,
    fee_from_balance_transaction,
    payment_from_intent,
    reversal_from_dispute,
    reversal_from_refund,
)

START_MS = 1_767_225_600_000
DAY_MS = 86_400_000


def _pay(core: SimulatorCore, method: str, amount: int, command: str | None) -> str:
    body: dict[str, object] = {"amount": amount, "currency": "eur", "payment_method": method}
    if command is not None:
        body["metadata"] = {"billkeep_command": command}
    response = core.create_external_payment_intent(
        parse_payment_intent_create(form_from_json({**body, "confirm": "true"}))
    )
    return str(response.body.get("id", ""))  # a decline answers with an error body


def _full_objects(core: SimulatorCore, kind: str) -> list[dict[str, object]]:
    with core.store.read() as tx:
        items, has_more = tx.list_objects(kind, ListWindow(limit=100))
    assert not has_more
    return [item.obj for item in items]


def test_fast_extraction_equals_the_mapping_of_full_objects(tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    core = SimulatorCore(SimStore(str(tmp_path / "sim.db")), clock, SimConfig(seed=3))
    paid = _pay(core, "pm_card_visa", 1_234, "cmd_a")
    _pay(core, "pm_card_chargeDeclined", 500, "cmd_b")
    _pay(core, "pm_card_chargeDeclinedInsufficientFunds", 700, None)
    settled = _pay(core, "pm_card_async", 900, "cmd_c")
    _pay(core, "pm_card_async", 901, "cmd_d")  # still processing
    _pay(core, "pm_card_visa", 42, None)  # made outside billkeep
    core.settle_payment_intent(settled)
    core.create_refund(parse_refund_create(form_from_json({"payment_intent": paid, "amount": 34})))

    source = SimulatorStoreSource(core, page_size=2)  # several pages
    window = (START_MS - DAY_MS, START_MS + DAY_MS)
    fast_payments = [p for page in source.payments(*window) for p in page]
    expected = [payment_from_intent(o) for o in _full_objects(core, "payment_intent")]
    assert sorted(fast_payments, key=repr) == sorted(expected, key=repr)
    assert len(fast_payments) == 6
    statuses = {p.status for p in fast_payments}
    assert statuses == {GatewayStatus.SUCCEEDED, GatewayStatus.FAILED, GatewayStatus.PROCESSING}
    assert {p.command_ref for p in fast_payments} == {"cmd_a", "cmd_b", "cmd_c", "cmd_d", None}

    fast_fees = [f for page in source.fees(*window) for f in page]
    full = [fee_from_balance_transaction(o) for o in _full_objects(core, "balance_transaction")]
    assert sorted(fast_fees, key=repr) == sorted((f for f in full if f is not None), key=repr)
    assert len(fast_fees) == 3 and all(f.fee_minor > 0 for f in fast_fees)  # charges only

    # Outside the window: nothing.
    assert [
        p for page in source.payments(START_MS + DAY_MS, START_MS + 2 * DAY_MS) for p in page
    ] == []


def test_fast_reversals_equal_the_mapping_of_full_refunds_and_disputes(tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    core = SimulatorCore(SimStore(str(tmp_path / "sim.db")), clock, SimConfig(seed=4))
    refunded = _pay(core, "pm_card_visa", 1_000, "cmd_a")
    disputed = _pay(core, "pm_card_visa", 2_000, None)
    refund_form = {"payment_intent": refunded, "amount": 300, "metadata": {"billkeep_command": "c"}}
    core.create_refund(parse_refund_create(form_from_json(refund_form)))
    core.create_refund(parse_refund_create(form_from_json({"payment_intent": refunded})))
    core.create_dispute(parse_dispute_create(form_from_json({"payment_intent": disputed})))

    source = SimulatorStoreSource(core, page_size=1)
    window = (START_MS - DAY_MS, START_MS + DAY_MS)
    fast = [r for page in source.reversals(*window) for r in page]
    expected = [reversal_from_refund(o) for o in _full_objects(core, "refund")]
    expected += [reversal_from_dispute(o) for o in _full_objects(core, "dispute")]
    assert sorted(fast, key=repr) == sorted(expected, key=repr)
    assert sorted((r.kind, r.amount_minor, r.command_ref) for r in fast) == [
        (ReversalKind.DISPUTE, 2_000, None),
        (ReversalKind.REFUND, 300, "c"),
        (ReversalKind.REFUND, 700, None),
    ]
    assert {r.status for r in fast} == {ReversalStatus.SUCCEEDED}
    assert [
        r for page in source.reversals(START_MS + DAY_MS, START_MS + 2 * DAY_MS) for r in page
    ] == []
