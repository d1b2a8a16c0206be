"""The command dedup window: decisions, durability across reopen, pruning by count and age."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.dedup import (
    DAY_MS,
    CommandDedupWindow,
    CommandRecord,
    DecisionKind,
    decide,
    prune_cutoff_ms,
)
from edge_agent.interlocks import SwitchEvent
from protocols.commands import Action, Command, Outcome

NOW = 1_764_000_000_000


def command(n: int = 1, action: Action = Action.SWITCH_ON) -> Command:
    return Command(command_id=f"cmd-{n:08d}", gateway_id="gw-1", device_id="boiler",
                   action=action, issued_at=NOW - 1000, expires_at=NOW + 60_000)


@pytest.fixture
def window(tmp_path: Path) -> Iterator[CommandDedupWindow]:
    w = CommandDedupWindow(tmp_path / "commands.sqlite", max_ids=3, days=1.0)
    w.open()
    yield w
    w.close()


def test_decide_tells_new_duplicate_and_interrupted_apart() -> None:
    started = CommandRecord("cmd-00000001", "boiler", "switch_on", {}, NOW)
    done = CommandRecord("cmd-00000001", "boiler", "switch_on", {}, NOW, Outcome.EXECUTED)
    assert decide(None).kind is DecisionKind.NEW
    assert decide(started).kind is DecisionKind.INTERRUPTED
    assert decide(done).kind is DecisionKind.DUPLICATE


def test_a_finished_command_is_a_duplicate_with_its_stored_outcome(
        window: CommandDedupWindow) -> None:
    assert window.begin(command(), NOW).kind is DecisionKind.NEW
    window.finish("cmd-00000001", Outcome.EXECUTED, result={"state": "on"}, now_ms=NOW + 5)
    decision = window.lookup("cmd-00000001")
    assert decision.kind is DecisionKind.DUPLICATE
    assert decision.record is not None
    assert decision.record.outcome is Outcome.EXECUTED
    assert decision.record.result == {"state": "on"}
    assert decision.record.decided_ms == NOW + 5


def test_begin_twice_never_says_new_again(window: CommandDedupWindow) -> None:
    assert window.begin(command(), NOW).kind is DecisionKind.NEW
    assert window.begin(command(), NOW).kind is DecisionKind.INTERRUPTED


def test_a_started_command_survives_a_reopen_as_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    first = CommandDedupWindow(path)
    first.open()
    first.begin(command(1), NOW)
    first.begin(command(2), NOW + 1)
    first.finish("cmd-00000002", Outcome.EXECUTED, now_ms=NOW + 2)
    first.close()  # as good as a kill: every commit was already fsynced
    second = CommandDedupWindow(path)
    second.open()
    assert [r.command_id for r in second.interrupted()] == ["cmd-00000001"]
    assert second.lookup("cmd-00000002").kind is DecisionKind.DUPLICATE
    second.close()


def test_record_remembers_an_outcome_without_overwriting_an_existing_one(
        window: CommandDedupWindow) -> None:
    window.record(command(1), Outcome.EXPIRED, reason="late", now_ms=NOW)
    window.begin(command(2), NOW)
    window.record(command(2), Outcome.REJECTED, reason="x", now_ms=NOW)
    first = window.lookup("cmd-00000001").record
    assert first is not None and first.outcome is Outcome.EXPIRED and first.reason == "late"
    assert window.lookup("cmd-00000002").kind is DecisionKind.INTERRUPTED


def finished(window: CommandDedupWindow, n: int, at_ms: int) -> None:
    window.record(command(n), Outcome.EXECUTED, now_ms=at_ms)


def test_prune_keeps_every_id_younger_than_the_age_window(window: CommandDedupWindow) -> None:
    for n in range(10):
        finished(window, n, NOW + n)
    assert window.prune(NOW + DAY_MS - 1) == 0
    assert window.size() == 10


def test_prune_keeps_the_newest_max_ids_however_old(window: CommandDedupWindow) -> None:
    for n in range(10):
        finished(window, n, NOW + n)
    assert window.prune(NOW + 30 * DAY_MS) == 7
    kept = [n for n in range(10) if window.lookup(command(n).command_id).record is not None]
    assert kept == [7, 8, 9]


def test_prune_forgets_only_ids_outside_both_windows(window: CommandDedupWindow) -> None:
    for n in range(5):
        finished(window, n, NOW)  # old
    for n in range(5, 10):
        finished(window, n, NOW + 2 * DAY_MS)  # young
    assert window.prune(NOW + 2 * DAY_MS) == 5
    assert window.size() == 5  # more than max_ids: the young ones are all kept


def test_prune_never_forgets_a_started_command(window: CommandDedupWindow) -> None:
    window.begin(command(0), NOW)
    for n in range(1, 10):
        finished(window, n, NOW + n)
    window.prune(NOW + 30 * DAY_MS)
    assert window.lookup(command(0).command_id).kind is DecisionKind.INTERRUPTED


def test_the_cutoff_is_days_before_now() -> None:
    assert prune_cutoff_ms(NOW, 7) == NOW - 7 * DAY_MS


def test_switch_history_persists_and_prunes_to_the_last_hour_plus_latest(
        tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    window = CommandDedupWindow(path)
    window.open()
    window.begin(command(1), NOW)
    window.finish("cmd-00000001", Outcome.EXECUTED, now_ms=NOW,
                  switch=("boiler", SwitchEvent(NOW, True)))
    window.record_switch("boiler", SwitchEvent(NOW + 10_000, False))
    window.record_switch("pump", SwitchEvent(NOW, True))
    window.close()
    window = CommandDedupWindow(path)
    window.open()
    assert window.switch_history("boiler") == [SwitchEvent(NOW, True),
                                               SwitchEvent(NOW + 10_000, False)]
    window.prune(NOW + 7_200_000)
    assert window.switch_history("boiler") == [SwitchEvent(NOW + 10_000, False)]
    assert window.switch_history("pump") == [SwitchEvent(NOW, True)]
    window.close()


def test_the_window_prunes_itself_every_hundred_new_ids(window: CommandDedupWindow) -> None:
    for n in range(99):
        finished(window, n, NOW)
    assert window.size() == 99
    finished(window, 99, NOW + 30 * DAY_MS)  # the 100th new id triggers a prune
    assert window.size() == 3
