"""The local shadow's decisions (pure) and its SQLite store: one request keeps one command id
while versions move on, clears are guarded, stale deltas are ignored, state survives a reopen."""

from __future__ import annotations

from pathlib import Path

from edge_agent.ports import ShadowDelta, ShadowSnapshot
from edge_agent.shadow_local import (
    LocalShadow,
    after_report,
    observe_ack,
    plan,
    report_request,
    take_delta,
    take_snapshot,
)
from edge_agent.shadow_store import SqliteShadowStore
from protocols.commands import CommandAck, Outcome

GW = "gw-1"


def snapshot(version: int, desired: dict[str, object], ts: int = 100,
             reported: dict[str, object] | None = None) -> ShadowSnapshot:
    return ShadowSnapshot(version=version, desired=desired, reported=reported or {},
                          delta=desired, desired_ts={k: ts for k in desired})


def ack(command_id: str, state: str = "on") -> CommandAck:
    return CommandAck(command_id=command_id, gateway_id=GW, device_id="boiler",
                      outcome=Outcome.EXECUTED, result={"state": state}, ts=1_764_000_000_000)


def test_a_request_keeps_the_command_id_of_the_version_it_was_first_seen_at() -> None:
    shadow = take_snapshot(LocalShadow("boiler"), snapshot(3, {"state": "on"}))
    shadow, (first,) = plan(shadow, GW, {"state": "on"}, {"state": 100}, 3)
    # reported-only updates moved the version on; the request itself did not change
    shadow = take_snapshot(shadow, snapshot(7, {"state": "on"}))
    shadow, (again,) = plan(shadow, GW, {"state": "on"}, {"state": 100}, 7)
    assert again.command_id == first.command_id


def test_the_same_value_set_again_later_is_a_new_request() -> None:
    shadow, (first,) = plan(LocalShadow("boiler"), GW, {"state": "on"}, {"state": 100}, 3)
    shadow = take_snapshot(shadow, snapshot(5, {"state": "on"}, ts=200))
    shadow, (second,) = plan(shadow, GW, {"state": "on"}, {"state": 200}, 5)
    assert second.command_id != first.command_id


def test_an_acked_request_is_cleared_in_one_update_guarded_by_the_version() -> None:
    shadow = take_snapshot(LocalShadow("boiler"), snapshot(3, {"state": "on"}))
    shadow, (item,) = plan(shadow, GW, {"state": "on"}, {"state": 100}, 3)
    shadow = observe_ack(shadow, GW, ack(item.command_id), {"state": "on"})
    assert report_request(shadow) == ({"reported": {"state": "on", "last_command": {
        "id": item.command_id, "outcome": "executed", "reason": None}},
        "desired": {"state": None}}, 3)


def test_an_ack_arriving_while_a_report_is_in_flight_stays_pending() -> None:
    shadow = observe_ack(LocalShadow("boiler", version=3), GW, ack("cmd-00000001"), None)
    pending = report_request(shadow)
    assert pending is not None
    later = observe_ack(shadow, GW, ack("cmd-00000002", "off"), {"state": "off"})
    done = after_report(later, shadow, pending[0], 4)
    assert done.report_pending and done.version == 4
    assert report_request(after_report(shadow, shadow, pending[0], 9)) is None
    assert after_report(shadow, shadow, pending[0], 9).version == 3  # 9 is not 3 + 1: unknown


def test_a_delta_older_than_the_known_version_is_ignored() -> None:
    shadow = LocalShadow("boiler", version=5)
    assert take_delta(shadow, ShadowDelta("boiler", 4, {"state": "on"}, {})) is None
    newer = take_delta(shadow, ShadowDelta("boiler", 6, {"state": "on"}, {}))
    assert newer is not None and newer.version == 6


def test_the_store_keeps_every_field_across_a_reopen(tmp_path: Path) -> None:
    shadow = take_snapshot(LocalShadow("boiler"), snapshot(3, {"state": "on", "value": 4.5}))
    shadow, _ = plan(shadow, GW, {"state": "on", "value": 4.5}, {"state": 100}, 3)
    shadow = observe_ack(shadow, GW, ack("cmd-00000001"), {"state": "on"})
    store = SqliteShadowStore(tmp_path / "shadow.sqlite")
    store.open()
    store.save(shadow)
    store.close()
    reopened = SqliteShadowStore(tmp_path / "shadow.sqlite")
    reopened.open()
    try:
        assert reopened.load() == {"boiler": shadow}
    finally:
        reopened.close()
