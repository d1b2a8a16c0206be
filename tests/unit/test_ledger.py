"""The chaos ledger counts losses, duplicates and double executions from plain facts."""

from __future__ import annotations

from simulator.faults.ledger import (
    Actuation,
    GatewayReadings,
    IssuedCommand,
    StoredReading,
    build_ledger,
    committed_seqs,
    format_ledger,
)


def rows(seqs: range | list[int], ts0: int = 1_000) -> list[StoredReading]:
    return [StoredReading(seq, "grid", "power", ts0 + seq, float(seq)) for seq in seqs]


def gateway(stored: list[StoredReading], last_seq: int, pending: frozenset[int] = frozenset(),
            never_assigned: tuple[tuple[int, int], ...] = ()) -> GatewayReadings:
    return GatewayReadings("gw-1", last_seq=last_seq, pending_seqs=pending, dropped=0,
                           stored=stored, never_assigned=never_assigned)


def test_everything_committed_and_stored_once_is_clean() -> None:
    ledger = build_ledger([gateway(rows(range(1, 101)), 100)], [], [], 1.5)
    assert (ledger.readings_committed, ledger.stored, ledger.lost, ledger.duplicated) == (
        100, 100, 0, 0)
    assert ledger.clean and ledger.problems == ()


def test_a_missing_seq_is_a_loss_and_named() -> None:
    stored = rows([s for s in range(1, 101) if s != 42])
    ledger = build_ledger([gateway(stored, 100)], [], [], 1.0)
    assert ledger.lost == 1 and not ledger.clean
    assert "42" in ledger.problems[0]


def test_seqs_skipped_after_an_unclean_restart_are_not_losses() -> None:
    # Killed at seq 50; the buffer resumed above its reserved ceiling 64.
    stored = rows([*range(1, 51), *range(65, 81)])
    ledger = build_ledger([gateway(stored, 80, never_assigned=((51, 64),))], [], [], 2.0)
    assert ledger.readings_committed == 66 and ledger.lost == 0 and ledger.clean
    assert committed_seqs(10, [(3, 4), (8, 8)]) == {1, 2, 5, 6, 7, 9, 10}


def test_readings_still_pending_in_the_stopped_buffer_are_not_lost() -> None:
    # 95..100 stored but their ack had not arrived yet: pending and stored, counted once.
    pending = frozenset(range(91, 101))
    ledger = build_ledger([gateway(rows(range(1, 96)), 100, pending=pending)], [], [], 1.0)
    assert (ledger.lost, ledger.pending, ledger.stored) == (0, 5, 95)
    assert ledger.clean


def test_no_recovery_or_a_failed_check_is_not_clean() -> None:
    assert not build_ledger([gateway(rows(range(1, 4)), 3)], [], [], None).clean
    failed = build_ledger([], [], [], 1.0, failed_checks=["3 of 40 garbage messages vanished"])
    assert not failed.clean and failed.problems[0].startswith("3 of 40")


def test_the_same_reading_under_two_seqs_is_a_duplicate() -> None:
    stored = rows(range(1, 11))
    again = stored[3]
    stored.append(StoredReading(11, again.meter_id, again.channel, again.ts, again.value))
    ledger = build_ledger([gateway(stored, 11)], [], [], 1.0)
    assert ledger.duplicated == 1 and not ledger.clean


def test_same_timestamp_with_another_value_is_not_a_duplicate() -> None:
    # A clock jumped back can stamp a new reading with an old timestamp.
    stored = [StoredReading(1, "grid", "power", 5_000, 10.0),
              StoredReading(2, "grid", "power", 5_000, 11.0)]
    assert build_ledger([gateway(stored, 2)], [], [], 1.0).duplicated == 0


def test_a_stored_seq_never_committed_is_unexpected() -> None:
    ledger = build_ledger([gateway(rows(range(1, 12)), 10)], [], [], 1.0)
    assert ledger.unexpected == 1 and not ledger.clean


def test_two_writes_for_one_executed_command_is_a_double_execution() -> None:
    commands = [IssuedCommand("c1", "sw", "executed", 0),
                IssuedCommand("c2", "sp", "executed", 450)]
    writes = [Actuation("sw", 0), Actuation("sw", 0), Actuation("sp", 450)]
    ledger = build_ledger([], commands, writes, 1.0)
    assert ledger.double_executions == 1 and ledger.commands_executed == 2
    assert not ledger.clean and "sw value 0: 2 writes for 1 executed" in ledger.problems[0]


def test_commands_with_the_same_effect_are_matched_by_count() -> None:
    commands = [IssuedCommand(f"c{i}", "sw", "executed", i % 2) for i in range(4)]
    writes = [Actuation("sw", i % 2) for i in range(4)]
    ledger = build_ledger([], commands, writes, 0.5)
    assert ledger.double_executions == 0 and ledger.actuations == 4 and ledger.clean


def test_a_write_for_a_rejected_or_expired_command_is_a_double_execution() -> None:
    commands = [IssuedCommand("c1", "sw", "expired", 1), IssuedCommand("c2", "sp", "rejected", 700)]
    ledger = build_ledger([], commands, [Actuation("sw", 1)], 0.5)
    assert ledger.double_executions == 1 and ledger.commands_final == 2


def test_executed_without_a_write_is_a_missing_actuation() -> None:
    ledger = build_ledger([], [IssuedCommand("c1", "sw", "executed", 1)], [], 0.5)
    assert ledger.missing_actuations == 1 and not ledger.clean


def test_a_command_that_never_reached_a_final_status_is_not_clean() -> None:
    commands = [IssuedCommand("c1", "sw", "sent", 1), IssuedCommand("c2", "sw", None, 0)]
    ledger = build_ledger([], commands, [], 0.5)
    assert (ledger.commands_issued, ledger.commands_final) == (2, 0)
    assert not ledger.clean and len(ledger.problems) == 2


def test_gateways_add_up_and_the_table_shows_the_verdict() -> None:
    a = GatewayReadings("gw-a", 5, frozenset(), 0, rows(range(1, 6)))
    b = GatewayReadings("gw-b", 3, frozenset(), 2, rows([1]), never_assigned=((2, 2),))
    ledger = build_ledger([a, b], [], [], 3.25)
    assert (ledger.readings_committed, ledger.stored, ledger.lost, ledger.dropped) == (7, 6, 1, 2)
    text = format_ledger("demo", ledger, {"gateways": "2"})
    assert "readings lost" in text and "DIRTY" in text and "3.2" in text
    assert "gw-b: 1 lost" in text
