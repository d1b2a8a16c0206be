"""The chaos ledger: what was taken vs what was stored, what was ordered vs what was done.

Pure: the scenario gathers the facts (buffer counters, seqs skipped after unclean restarts,
stored rows, command statuses, device writes) and :func:`build_ledger` turns them into counts.

Readings. A reading is *committed* when the agent's buffer assigned it a seq. seqs are
strictly increasing but not contiguous: a restart after an unclean shutdown (SIGKILL)
continues above the buffer's reserved ceiling, so the seqs between the last committed one and
that ceiling are never assigned; the scenario records those ranges (``never_assigned``) when
it kills an agent. Committed = ``1..last_seq`` minus those ranges.

- ``lost``: committed seqs that are neither stored nor still pending in the stopped buffer. Readings
  the buffer removed by policy (disk budget) are lost too; ``dropped`` says how many of them
  the agent accounted for.
- ``duplicated``: the store is unique on ``(gateway, seq)``, so a duplicate can only be the
  same reading (meter, channel, ts, value) stored under two seqs; each extra copy counts once.
- ``unexpected``: stored seqs the agent never committed (a reused or invented seq).

Commands. Each issued command names the register value it must write (``expected_write``),
so writes are attributed to commands by (device, value). A group with ``n`` commands that
ended ``executed`` may cause ``n`` writes: each write beyond that is a double execution, each
missing one a missing actuation (``executed`` without effect).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

FINAL_STATUSES = frozenset({"executed", "rejected", "failed", "expired", "unknown"})
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class StoredReading:
    """One row of the cloud's ``readings`` table for a gateway."""

    seq: int
    meter_id: str
    channel: str
    ts: int
    value: float | None


@dataclass(frozen=True)
class GatewayReadings:
    """One gateway's readings facts, gathered after its agent stopped.

    ``never_assigned`` holds inclusive seq ranges ``(first, last)`` the buffer skipped after
    an unclean restart; ``pending_seqs`` are the readings the stopped buffer still holds
    (committed, not yet confirmed: durable, sent on the next start).
    """

    gateway_id: str
    last_seq: int
    pending_seqs: AbstractSet[int]
    dropped: int
    stored: Sequence[StoredReading]
    never_assigned: Sequence[tuple[int, int]] = ()


@dataclass(frozen=True)
class IssuedCommand:
    """A command the scenario issued, its final status (None if never seen) and the register
    value its execution writes on its device."""

    command_id: str
    device_id: str
    status: str | None
    expected_write: int


@dataclass(frozen=True)
class Actuation:
    """One register write observed at a simulated device."""

    device_id: str
    value: int


@dataclass(frozen=True)
class Ledger:
    """The counts a chaos scenario ends with; :attr:`clean` is the verdict."""

    readings_committed: int
    stored: int
    pending: int
    lost: int
    duplicated: int
    unexpected: int
    dropped: int
    commands_issued: int
    commands_final: int
    commands_executed: int
    actuations: int
    double_executions: int
    missing_actuations: int
    time_to_recover_s: float | None
    failed_checks: tuple[str, ...] = field(default=())  # scenario-specific, e.g. dead letters
    problems: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        """Nothing lost, duplicated, invented or double-executed; every command final; the
        system recovered and every scenario check passed. Readings still pending in a stopped
        buffer are not a loss (they are durable and leave on the next start)."""
        return (self.lost == 0 and self.duplicated == 0 and self.unexpected == 0
                and self.double_executions == 0 and self.missing_actuations == 0
                and self.commands_final == self.commands_issued
                and self.time_to_recover_s is not None and not self.failed_checks)

    def rows(self) -> list[tuple[str, str]]:
        """(name, value) pairs in display order, for a table."""
        ttr = "not recovered" if self.time_to_recover_s is None else f"{self.time_to_recover_s:.1f}"
        return [
            ("readings committed", str(self.readings_committed)),
            ("readings stored", str(self.stored)),
            ("readings pending in stopped buffers", str(self.pending)),
            ("readings lost", str(self.lost)),
            ("readings duplicated", str(self.duplicated)),
            ("readings unexpected", str(self.unexpected)),
            ("readings dropped by agents", str(self.dropped)),
            ("commands issued", str(self.commands_issued)),
            ("commands final", str(self.commands_final)),
            ("commands executed", str(self.commands_executed)),
            ("actuations", str(self.actuations)),
            ("double executions", str(self.double_executions)),
            ("missing actuations", str(self.missing_actuations)),
            ("time to recover (s)", ttr),
            ("verdict", "CLEAN" if self.clean else "DIRTY"),
        ]


@dataclass(frozen=True)
class _ReadingCounts:
    committed: int = 0
    stored: int = 0
    pending: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    dropped: int = 0


def committed_seqs(last_seq: int, never_assigned: Iterable[tuple[int, int]]) -> set[int]:
    """``1..last_seq`` without the skipped ranges."""
    seqs = set(range(1, last_seq + 1))
    for first, last in never_assigned:
        seqs.difference_update(range(first, last + 1))
    return seqs


def _examples(seqs: Iterable[int]) -> str:
    ordered = sorted(seqs)
    more = f" (+{len(ordered) - _MAX_EXAMPLES} more)" if len(ordered) > _MAX_EXAMPLES else ""
    return ", ".join(map(str, ordered[:_MAX_EXAMPLES])) + more


def _gateway_counts(gw: GatewayReadings, problems: list[str]) -> _ReadingCounts:
    committed = committed_seqs(gw.last_seq, gw.never_assigned)
    stored = {row.seq for row in gw.stored}
    missing = committed - stored - gw.pending_seqs
    lost = len(missing)
    unexpected = stored - committed
    copies = Counter((r.meter_id, r.channel, r.ts, r.value) for r in gw.stored)
    duplicated = sum(n - 1 for n in copies.values() if n > 1)
    if lost:
        problems.append(f"{gw.gateway_id}: {lost} lost (missing seqs {_examples(missing)}; "
                        f"{gw.dropped} dropped by the agent)")
    if unexpected:
        problems.append(f"{gw.gateway_id}: stored seqs never committed: "
                        f"{_examples(unexpected)}")
    if duplicated:
        twice = [key for key, n in copies.items() if n > 1][:_MAX_EXAMPLES]
        problems.append(f"{gw.gateway_id}: {duplicated} duplicated, e.g. {twice}")
    pending = len(gw.pending_seqs - stored)
    return _ReadingCounts(len(committed), len(stored), pending, lost, duplicated,
                          len(unexpected), gw.dropped)


def _command_counts(commands: Sequence[IssuedCommand], actuations: Sequence[Actuation],
                    problems: list[str]) -> tuple[int, int, int]:
    """(double executions, missing actuations, executed) over all commands."""
    licensed = Counter((c.device_id, c.expected_write) for c in commands
                       if c.status == "executed")
    done = Counter((a.device_id, a.value) for a in actuations)
    double = missing = 0
    for key in sorted(set(licensed) | set(done)):
        extra = done[key] - licensed[key]
        if extra > 0:
            double += extra
            problems.append(f"{key[0]} value {key[1]}: {done[key]} writes for "
                            f"{licensed[key]} executed commands")
        elif extra < 0:
            missing -= extra
            problems.append(f"{key[0]} value {key[1]}: {licensed[key]} executed commands but "
                            f"{done[key]} writes")
    for command in commands:
        if command.status not in FINAL_STATUSES:
            problems.append(f"command {command.command_id} on {command.device_id} is not final "
                            f"({command.status})")
    return double, missing, sum(licensed.values())


def build_ledger(gateways: Sequence[GatewayReadings], commands: Sequence[IssuedCommand],
                 actuations: Sequence[Actuation], time_to_recover_s: float | None,
                 failed_checks: Sequence[str] = ()) -> Ledger:
    """Count everything; ``time_to_recover_s`` is None when the scenario never recovered;
    ``failed_checks`` are the scenario's own failed assertions, each making it dirty."""
    problems: list[str] = []
    counts = [_gateway_counts(gw, problems) for gw in gateways]

    def total(name: str) -> int:
        return sum(int(getattr(c, name)) for c in counts)

    double, missing, executed = _command_counts(commands, actuations, problems)
    return Ledger(
        readings_committed=total("committed"), stored=total("stored"), pending=total("pending"),
        lost=total("lost"), duplicated=total("duplicated"), unexpected=total("unexpected"),
        dropped=total("dropped"), commands_issued=len(commands),
        commands_final=sum(1 for c in commands if c.status in FINAL_STATUSES),
        commands_executed=executed, actuations=len(actuations), double_executions=double,
        missing_actuations=missing, time_to_recover_s=time_to_recover_s,
        failed_checks=tuple(failed_checks), problems=(*failed_checks, *problems))


def format_ledger(name: str, ledger: Ledger, extra: Mapping[str, str] | None = None) -> str:
    """A two-column text table, then one line per problem."""
    rows = [("scenario", name), *(extra or {}).items(), *ledger.rows()]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    lines += [f"! {problem}" for problem in ledger.problems]
    return "\n".join(lines)
