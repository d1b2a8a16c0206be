"""Pure command rules (validation, idempotency hash, backpressure, ack transitions) and the
dispatcher round against fakes."""

from __future__ import annotations

import pytest

from cloud_sync.command_fakes import FakeCommandBus, FakeOutboxStore
from cloud_sync.command_rules import (
    CommandRequestError,
    CommandStatus,
    apply_ack,
    check_capabilities,
    check_idempotency_key,
    parse_request,
    queue_refusal,
    rate_refusal,
)
from cloud_sync.dispatcher import CommandDispatcher
from cloud_sync.ports import StoredCommand
from protocols import decode
from protocols.commands import Command, CommandAck, Outcome

NOW = 1_800_000_000_000


def ack(outcome: Outcome = Outcome.EXECUTED, **result: float | int | bool | str) -> CommandAck:
    return CommandAck(command_id="cmd-00001", gateway_id="gw-1", device_id="d1",
                      outcome=outcome, result=result, ts=NOW)


def stored(command_id: str, priority: str = "normal", created_at: int = NOW,
           ttl_ms: int = 60_000) -> StoredCommand:
    return StoredCommand(command_id, "gw-1.d1", "gw-1", "d1", "switch_on", {}, priority,
                         "pending", created_at, created_at + ttl_ms, None, None, None, None,
                         None, 0, "h")


def test_equal_bodies_hash_equal_whatever_the_key_order_or_spelled_defaults() -> None:
    a = parse_request({"action": "switch_on"}, 60)
    b = parse_request({"priority": "normal", "ttl_s": 60, "params": {}, "action": "switch_on"},
                      60)
    c = parse_request({"action": "switch_on", "ttl_s": 61}, 60)
    assert a.canonical_hash() == b.canonical_hash() != c.canonical_hash()


@pytest.mark.parametrize(("raw", "words"), [
    ([], "body: must be a JSON object"),
    ({"action": "switch_on", "colour": 1}, "body.colour: unknown field"),
    ({"action": "nope"}, "action: 'nope' is not one of"),
    ({"action": "switch_on", "ttl_s": 86_401}, "ttl_s: must be an integer from 1 to 86400"),
    ({"action": "switch_on", "ttl_s": True}, "ttl_s"),
    ({"action": "switch_on", "params": {"x": [1]}}, "params: must be an object"),
])
def test_malformed_bodies_are_422_naming_the_field(raw: object, words: str) -> None:
    with pytest.raises(CommandRequestError) as err:
        parse_request(raw, 60)
    assert err.value.status_code == 422
    assert words in str(err.value)


def test_capabilities_and_params_are_checked_with_one_message() -> None:
    request = parse_request({"action": "set_setpoint", "params": {"value": 20}}, 60)
    check_capabilities(request, "d1", ["set_setpoint"])
    with pytest.raises(CommandRequestError, match=r"supports: switch_on\)"):
        check_capabilities(request, "d1", ["switch_on"])
    missing = parse_request({"action": "set_setpoint"}, 60)
    with pytest.raises(CommandRequestError, match=r"params\.value: required"):
        check_capabilities(missing, "d1", ["set_setpoint"])


def test_idempotency_key_is_required_and_printable() -> None:
    assert check_idempotency_key("abc-123") == "abc-123"
    for bad in (None, "", "has space", "x" * 201):
        with pytest.raises(CommandRequestError) as err:
            check_idempotency_key(bad)
        assert err.value.status_code == 400


def test_rate_limit_refuses_the_eleventh_and_says_when_a_token_frees() -> None:
    times = [NOW - 50_000 + i * 1000 for i in range(10)]  # oldest leaves the window in 10 s
    assert rate_refusal(times[:9], NOW, 10) is None
    refusal = rate_refusal(times, NOW, 10)
    assert refusal is not None
    assert (refusal.status_code, refusal.retry_after_s) == (429, 10)
    assert rate_refusal([NOW - 61_000] * 10, NOW, 10) is None  # outside the window


def test_full_queue_is_503_with_retry_after_until_the_first_expiry() -> None:
    assert queue_refusal([NOW + 5000], NOW, 2) is None
    refusal = queue_refusal([NOW + 30_000, NOW + 4_500], NOW, 2)
    assert refusal is not None
    assert (refusal.status_code, refusal.retry_after_s) == (503, 5)
    overdue = queue_refusal([NOW - 1], NOW, 1)
    assert overdue is not None and overdue.retry_after_s == 1  # never less than one second


def test_first_ack_records_the_outcome_and_repeats_change_nothing() -> None:
    update = apply_ack(CommandStatus.SENT, None, ack(Outcome.EXECUTED, power=1.0), NOW)
    assert update is not None
    assert (update.status, update.delivered_at, update.result) == \
        (CommandStatus.EXECUTED, NOW, {"power": 1.0})
    assert apply_ack(CommandStatus.EXECUTED, NOW, ack(Outcome.FAILED), NOW + 1) is None
    assert apply_ack(CommandStatus.EXPIRED, NOW, ack(Outcome.EXECUTED), NOW + 1) is None


def test_a_late_ack_wins_over_our_own_expiry() -> None:
    update = apply_ack(CommandStatus.EXPIRED, None, ack(Outcome.EXECUTED), NOW)
    assert update is not None and update.status is CommandStatus.EXECUTED


def test_dispatcher_publishes_safety_first_and_redelivers_only_after_the_timeout() -> None:
    clock = [NOW]
    outbox = FakeOutboxStore([stored("normal-01"), stored("safety-01", "safety", NOW + 1)])
    bus = FakeCommandBus()
    clock[0] += 10
    dispatcher = CommandDispatcher(outbox, bus, redelivery_s=10, now_ms=lambda: clock[0])
    assert dispatcher.step() == (2, 2)
    assert [decode(Command, p).command_id for _t, p in bus.published] == \
        ["safety-01", "normal-01"]
    assert bus.published[0][0] == "hw/gw-1/commands"
    assert dispatcher.step() == (0, 0)  # not due yet
    clock[0] += 10_000
    assert dispatcher.step() == (2, 2)
    assert dispatcher.stats.republished == 2
    clock[0] += 60_000
    assert dispatcher.step() == (0, 0)
    assert dispatcher.stats.expired == 2


def test_unconfirmed_publish_stays_due_and_is_not_marked_sent() -> None:
    outbox = FakeOutboxStore([stored("cmd-00001")])
    bus = FakeCommandBus(handler=lambda _t, _p: False)  # broker never PUBACKs
    dispatcher = CommandDispatcher(outbox, bus, now_ms=lambda: NOW + 1)
    assert dispatcher.step() == (1, 0)
    assert outbox.commands["cmd-00001"].status == "pending"
    bus.connected = False
    assert dispatcher.step() == (1, 0)
    assert dispatcher.stats.unconfirmed == 2
