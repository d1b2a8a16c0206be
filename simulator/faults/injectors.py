"""Fault injectors a scenario drives against a :class:`~simulator.fleet.Fleet`, and the readers
that gather the ledger's facts (buffers, stored rows, dead letters, device writes).

Process faults are real signals: the broker, a cloud replica or an agent worker process is
SIGKILLed (a crash: no goodbye, no flush) and restarted on the same port or files. When an
agent process dies, :func:`kill_agent_process` reads each of its buffers before the restart,
because the restart after an unclean shutdown skips the seqs between the last committed one
and the buffer's reserved ceiling: those ranges are not losses and the ledger must know them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.buffer_files import read_seqfloor
from simulator.faults.ledger import Actuation, StoredReading
from simulator.fleet_plan import (
    HEAT_PUMP_SETPOINT_UNIT,
    WATER_HEATER_SWITCH_UNIT,
    setpoint_device,
    switch_device,
)

log = logging.getLogger(__name__)


class AgentFleet(Protocol):
    """What the injectors need from ``simulator.fleet.Fleet``."""

    def kill_agent_process(self, i: int) -> None: ...

    def agent_process_of(self, gateway_id: str) -> int: ...

    def gateway_ids(self) -> list[str]: ...

    def buffer_path(self, gateway_id: str) -> Path: ...


@dataclass(frozen=True)
class BufferFacts:
    """A stopped agent's buffer as found on disk (read without running its recovery)."""

    last_seq: int  # highest seq committed
    floor: int  # reserved ceiling: an unclean reopen continues above it
    pending_seqs: frozenset[int]  # committed, not yet confirmed by the cloud
    dropped: int  # dropped_total (policy removals and recovery losses)
    clean_close: bool

    def skipped_on_reopen(self) -> tuple[int, int] | None:
        """The seq range an unclean reopen will never assign, if any (inclusive)."""
        if self.clean_close or self.floor <= self.last_seq:
            return None
        return (self.last_seq + 1, self.floor)


def read_buffer_facts(path: Path) -> BufferFacts:
    """Read a buffer whose process is stopped or dead. A missing file reads as empty."""
    if not path.exists():
        return BufferFacts(0, 0, frozenset(), 0, True)
    conn = sqlite3.connect(path, timeout=10)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        max_row = conn.execute("SELECT max(seq) FROM readings").fetchone()[0] or 0
        pending = frozenset(int(r[0]) for r in conn.execute("SELECT seq FROM readings"))
    finally:
        conn.close()
    return BufferFacts(last_seq=max(int(meta.get("last_seq", 0)), int(max_row)),
                       floor=read_seqfloor(path), pending_seqs=pending,
                       dropped=int(meta.get("dropped_total", 0)),
                       clean_close=meta.get("clean_close") == 1)


def kill_agent_process(fleet: AgentFleet, i: int) -> dict[str, tuple[int, int]]:
    """SIGKILL agent worker ``i``; return gateway -> seq range its restart will skip."""
    fleet.kill_agent_process(i)
    skipped: dict[str, tuple[int, int]] = {}
    for gateway in fleet.gateway_ids():
        if fleet.agent_process_of(gateway) != i:
            continue
        gap = read_buffer_facts(fleet.buffer_path(gateway)).skipped_on_reopen()
        if gap is not None:
            skipped[gateway] = gap
    log.info("agent process %d killed; seqs skipped on reopen: %s", i, skipped)
    return skipped


# -- the cloud's side -------------------------------------------------------------------------

def stored_readings(db_url: str, gateways: Iterable[str]) -> dict[str, list[StoredReading]]:
    """gateway -> its stored rows, from the cloud DB (SQLite or PostgreSQL)."""
    result: dict[str, list[StoredReading]] = {gw: [] for gw in gateways}
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT gateway_id, seq, meter_id, channel, ts, value FROM readings")).all()
    finally:
        engine.dispose()
    for gw, seq, meter, channel, ts, value in rows:
        if gw in result:
            result[gw].append(StoredReading(int(seq), str(meter), str(channel), int(ts),
                                            None if value is None else float(value)))
    return result


def stored_progress(db_url: str) -> dict[str, tuple[int, int]]:
    """gateway -> (count, max seq) stored: cheap enough to poll during recovery."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT gateway_id, count(*), max(seq) FROM readings "
                                        "GROUP BY gateway_id")).all()
    except sa.exc.OperationalError:
        return {}
    finally:
        engine.dispose()
    return {str(gw): (int(n), int(top)) for gw, n, top in rows}


def dead_letter_count(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM dead_letters")).scalar_one())
    finally:
        engine.dispose()


def device_writes(control_url: str, gateway: str) -> list[Actuation]:
    """Every actuator register write at a home's simulator, attributed to its device id."""
    devices = {(WATER_HEATER_SWITCH_UNIT, 0): switch_device(gateway),
               (HEAT_PUMP_SETPOINT_UNIT, 0): setpoint_device(gateway)}
    rows = httpx.get(f"{control_url}/writes", timeout=10).json()["writes"]
    return [Actuation(devices[(w["unit"], w["register"])], int(w["value"]))
            for w in rows if (w["unit"], w["register"]) in devices]


# -- malformed payloads -----------------------------------------------------------------------

def malformed_payloads(gateway: str) -> list[tuple[str, bytes]]:
    """(topic suffix, payload) pairs of many kinds of garbage; none is a valid message."""
    reading = {"meter_id": "grid", "channel": "power", "value": 1.0, "unit": "W",
               "ts": 1_764_000_000_000, "quality": "good", "seq": 1}
    bad_batches: list[object] = [
        {"schema_version": 1, "gateway_id": gateway, "readings": []},
        {"schema_version": 1, "gateway_id": gateway, "readings": [{**reading, "seq": None}]},
        {"schema_version": 1, "gateway_id": gateway, "readings": [{**reading, "seq": -5}]},
        {"schema_version": 1, "gateway_id": gateway, "readings": [{**reading, "unit": "furlong"}]},
        {"schema_version": 1, "gateway_id": gateway, "readings": [{**reading, "value": "NaN"}]},
        {"schema_version": 99, "gateway_id": gateway, "readings": [reading]},
        {"schema_version": 1, "gateway_id": "other gw!", "readings": [reading]},
        {"schema_version": 1, "readings": [reading]},
        [reading],
        "just a string",
        None,
    ]
    telemetry = [b"", b"not json at all", b"\xff\xfe\x00garbage\x80", b"{\"unterminated\": ",
                 b"[" * 5000 + b"]" * 5000, b"{}" * 10, b"x" * 200_000,
                 *(json.dumps(batch).encode() for batch in bad_batches)]
    acks: list[bytes] = [b"", b"\x00\x01", b"{}", b"{\"command_id\": 5}",
                         json.dumps({"schema_version": 1, "command_id": "nope",
                                     "gateway_id": gateway, "device_id": "d",
                                     "outcome": "exploded", "ts": 1}).encode()]
    return ([("telemetry", p) for p in telemetry] + [("commands/ack", p) for p in acks])


def inject_malformed(broker_port: int, gateways: Iterable[str], rounds: int = 1) -> int:
    """Publish every kind of garbage for each gateway ``rounds`` times, QoS 1, and wait for
    the broker's PUBACKs; return how many messages were published."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="homewatt-chaos-garbage")
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect("127.0.0.1", broker_port, keepalive=30)
    client.loop_start()
    sent = 0
    try:
        if not connected.wait(10):
            raise TimeoutError(f"garbage publisher could not connect to port {broker_port}")
        infos = []
        for _ in range(rounds):
            for gateway in gateways:
                for suffix, payload in malformed_payloads(gateway):
                    infos.append(client.publish(f"hw/{gateway}/{suffix}", payload, qos=1))
        for info in infos:
            info.wait_for_publish(timeout=30)
            sent += 1
    finally:
        client.disconnect()
        client.loop_stop()
    return sent
