"""The command dedup window: every command id this gateway decided, kept durably in SQLite.

A ``command_id`` is executed at most once. The executor asks :meth:`CommandDedupWindow.lookup`
first: a known id is re-acked with its stored outcome and never executed again. Before it
touches an actuator it calls :meth:`~CommandDedupWindow.begin`, which commits a ``started``
row; :meth:`~CommandDedupWindow.finish` turns it into the outcome. Both commits are fsynced
(``synchronous=FULL``: a lost commit here would be a double actuation), so a SIGKILL or power
cut between actuation and ack leaves a ``started`` row behind, never nothing:
:meth:`~CommandDedupWindow.interrupted` lists those at start-up and the executor resolves them
to ``unknown`` with the actuator's read-back instead of running them again.

The window keeps an id while it is among the ``max_ids`` newest **or** younger than ``days``;
only ids outside both are forgotten (a ``started`` row never is). The same file keeps each
actuator's switch history for the interlocks (the last hour plus its latest switch), so a
restart cannot be used to bypass ``min_off_s``.

Pure decisions (:func:`decide`, :func:`prune_cutoff_ms`) are apart from the adapter.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from edge_agent.durable_sqlite import open_durable
from edge_agent.errors import EdgeAgentError
from edge_agent.interlocks import HOUR_MS, SwitchEvent
from protocols.commands import Command, Outcome, ParamValue

__all__ = ["CommandDedupWindow", "CommandRecord", "Decision", "DecisionKind", "decide",
           "prune_cutoff_ms"]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# Prune after this many new records (and at open): a DELETE per command would be wasted work.
PRUNE_EVERY = 100

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS commands ("
    " command_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, action TEXT NOT NULL,"
    " params TEXT NOT NULL, received_ms INTEGER NOT NULL, outcome TEXT, reason TEXT,"
    " result TEXT NOT NULL DEFAULT '{}', decided_ms INTEGER)",
    "CREATE INDEX IF NOT EXISTS commands_by_age ON commands (received_ms)",
    "CREATE TABLE IF NOT EXISTS switches ("
    " device_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, state_on INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS switches_by_device ON switches (device_id, ts_ms)",
)
_COLUMNS = ("command_id, device_id, action, params, received_ms, outcome, reason, result, "
            "decided_ms")


@dataclass(frozen=True)
class CommandRecord:
    """One remembered command. ``outcome is None`` means started and never finished."""

    command_id: str
    device_id: str
    action: str
    params: dict[str, ParamValue]
    received_ms: int
    outcome: Outcome | None = None
    reason: str | None = None
    result: dict[str, ParamValue] = field(default_factory=dict)
    decided_ms: int | None = None


class DecisionKind(StrEnum):
    NEW = "new"  # never seen: check it and (maybe) run it
    DUPLICATE = "duplicate"  # decided before: re-ack the stored outcome, do nothing
    INTERRUPTED = "interrupted"  # started, never finished: resolve to unknown, never re-run


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    record: CommandRecord | None = None


def decide(record: CommandRecord | None) -> Decision:
    """What to do with a delivery, given what the window remembers of its id."""
    if record is None:
        return Decision(DecisionKind.NEW)
    if record.outcome is None:
        return Decision(DecisionKind.INTERRUPTED, record)
    return Decision(DecisionKind.DUPLICATE, record)


def prune_cutoff_ms(now_ms: int, days: float) -> int:
    """Ids received before this may be forgotten, unless among the newest ``max_ids``."""
    return now_ms - round(days * DAY_MS)


class CommandDedupWindow:
    """SQLite adapter of the window (thread-safe; every method blocks on an fsync at most
    twice, a few ms on an SD card: call it through ``asyncio.to_thread``).

    Raises :class:`EdgeAgentError` when the file cannot be opened or written.
    """

    def __init__(self, path: Path, *, max_ids: int = 10_000, days: float = 7.0) -> None:
        self.path = path
        self.max_ids = max_ids
        self.days = days
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._since_prune = 0

    def open(self) -> None:
        self._db = open_durable(self.path, _SCHEMA, "command dedup window")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def lookup(self, command_id: str) -> Decision:
        with self._transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM commands WHERE command_id = ?",  # noqa: S608
                             (command_id,)).fetchone()
        return decide(None if row is None else _record(row))

    def begin(self, command: Command, now_ms: int) -> Decision:
        """Durably record ``command`` as started, before its actuator is touched.

        Returns ``NEW`` when this call recorded it; otherwise the decision for the row that
        was already there (the caller must then not actuate).
        """
        with self._transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM commands WHERE command_id = ?",  # noqa: S608
                             (command.command_id,)).fetchone()
            if row is not None:
                return decide(_record(row))
            db.execute(
                "INSERT INTO commands (command_id, device_id, action, params, received_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (command.command_id, command.device_id, command.action.value,
                 json.dumps(command.params), now_ms))
        self._count_new(now_ms)
        return Decision(DecisionKind.NEW)

    def finish(self, command_id: str, outcome: Outcome, *, reason: str | None = None,
               result: dict[str, ParamValue] | None = None, now_ms: int,
               switch: tuple[str, SwitchEvent] | None = None) -> None:
        """Record the outcome of a started command, and in the same commit the actuator
        switch it made (``(device_id, event)``), if any."""
        with self._transaction() as db:
            db.execute("UPDATE commands SET outcome = ?, reason = ?, result = ?, decided_ms = ? "
                       "WHERE command_id = ?",
                       (outcome.value, reason, json.dumps(result or {}), now_ms, command_id))
            if switch is not None:
                _insert_switch(db, *switch)

    def record(self, command: Command, outcome: Outcome, *, reason: str | None = None,
               result: dict[str, ParamValue] | None = None, now_ms: int) -> None:
        """Remember a command decided without actuation (expired, rejected), so a redelivery
        gets the same answer. A row already there is left as it is."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO commands (command_id, device_id, action, params, "
                "received_ms, outcome, reason, result, decided_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (command.command_id, command.device_id, command.action.value,
                 json.dumps(command.params), now_ms, outcome.value, reason,
                 json.dumps(result or {}), now_ms))
        self._count_new(now_ms)

    def interrupted(self) -> list[CommandRecord]:
        """Commands started but never finished (the agent died mid-actuation), oldest first."""
        with self._transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM commands WHERE outcome IS NULL "  # noqa: S608
                              "ORDER BY received_ms").fetchall()
        return [_record(row) for row in rows]

    def switch_history(self, device_id: str) -> list[SwitchEvent]:
        """The actuator's persisted switches: the last hour's and its latest, oldest first."""
        with self._transaction() as db:
            rows = db.execute("SELECT ts_ms, state_on FROM switches WHERE device_id = ? "
                              "ORDER BY ts_ms", (device_id,)).fetchall()
        return [SwitchEvent(int(ts), bool(on)) for ts, on in rows]

    def record_switch(self, device_id: str, event: SwitchEvent) -> None:
        """A switch learnt outside :meth:`finish` (e.g. from a read-back)."""
        with self._transaction() as db:
            _insert_switch(db, device_id, event)

    def prune(self, now_ms: int) -> int:
        """Forget ids outside both the count and the age window, and switches older than an
        hour (keeping each actuator's latest). Returns how many ids were forgotten."""
        cutoff = prune_cutoff_ms(now_ms, self.days)
        with self._transaction() as db:
            forgotten = db.execute(
                "DELETE FROM commands WHERE outcome IS NOT NULL AND received_ms < ? AND "
                "command_id NOT IN (SELECT command_id FROM commands "
                "ORDER BY received_ms DESC, rowid DESC LIMIT ?)",
                (cutoff, self.max_ids)).rowcount
            db.execute(
                "DELETE FROM switches WHERE ts_ms < ? AND rowid NOT IN "
                "(SELECT max(rowid) FROM switches GROUP BY device_id)", (now_ms - HOUR_MS,))
        self._since_prune = 0
        if forgotten:
            log.debug("dedup window forgot %d command ids", forgotten)
        return int(forgotten)

    def size(self) -> int:
        with self._transaction() as db:
            return int(db.execute("SELECT count(*) FROM commands").fetchone()[0])

    def _count_new(self, now_ms: int) -> None:
        """Prune once :data:`PRUNE_EVERY` ids were added since the last prune."""
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self.prune(now_ms)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise EdgeAgentError(f"command dedup window {self.path} is not open")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise EdgeAgentError(f"command dedup window {self.path}: {exc}") from exc


def _insert_switch(db: sqlite3.Connection, device_id: str, event: SwitchEvent) -> None:
    db.execute("INSERT INTO switches (device_id, ts_ms, state_on) VALUES (?, ?, ?)",
               (device_id, event.ts_ms, int(event.on)))


def _record(row: tuple[object, ...]) -> CommandRecord:
    (command_id, device_id, action, params, received_ms, outcome, reason, result,
     decided_ms) = row
    return CommandRecord(
        command_id=str(command_id), device_id=str(device_id), action=str(action),
        params=json.loads(str(params)), received_ms=int(str(received_ms)),
        outcome=None if outcome is None else Outcome(str(outcome)),
        reason=None if reason is None else str(reason), result=json.loads(str(result)),
        decided_ms=None if decided_ms is None else int(str(decided_ms)))
