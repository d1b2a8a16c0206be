"""Telemetry ledger of a fleet run: readings committed on gateways vs stored in the cloud.

:func:`drain` ends a run the way the e2e test ends one gateway's: agents stop, restart without
meters (they only send what their buffers hold), and the test waits until every reading still
buffered is stored. :func:`telemetry_ledger` then compares each buffer's ``last_seq`` with the
cloud's rows. Both need the agent processes stopped when they read buffers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edge_agent.buffer import SqliteBuffer
from simulator.fleet import Fleet, FleetError

PAGE = 10_000


@dataclass(frozen=True)
class GatewayLedger:
    gateway_id: str
    last_seq: int  # the highest seq the agent ever assigned (committed)
    stored: int  # rows in the cloud for this gateway
    duplicated: int  # one reading (meter, channel, ts) stored under more than one seq
    missing: list[int] = field(default_factory=list)  # seqs 1..last_seq not stored
    still_buffered: int = 0  # readings still in the gateway's buffer
    dropped: int = 0  # removed by the buffer's disk budget (counted, not lost silently)


def pending_seqs(fleet: Fleet) -> dict[str, set[int]]:
    """Seqs still in each gateway's buffer (agent processes must be stopped)."""
    result: dict[str, set[int]] = {}
    for gateway in fleet.gateway_ids():
        path = fleet.buffer_path(gateway)
        if not path.exists():
            continue
        buffer = SqliteBuffer(path)
        buffer.open()
        try:
            seqs: set[int] = set()
            after = 0
            while page := buffer.pending(after_seq=after, limit=PAGE):
                seqs.update(r.seq for r in page if r.seq is not None)
                after = max(seqs)
            result[gateway] = seqs
        finally:
            buffer.close()
    return result


def drain(fleet: Fleet, timeout_s: float = 120.0) -> None:
    """Stop the agents, then let meterless agents send every buffered reading to the cloud.

    Raises :class:`FleetError` when some buffered reading is not stored within ``timeout_s``.
    Leaves the agent processes stopped.
    """
    for i in range(len(fleet.agents)):
        fleet.stop_agent_process(i)
    waiting = pending_seqs(fleet)
    for i in range(len(fleet.agents)):
        fleet.start_agent_process(i, drain_only=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            stored = fleet.stored_seqs()
            left = {gw: seqs - set(stored.get(gw, [])) for gw, seqs in waiting.items()}
            if not any(left.values()):
                return
            if time.monotonic() > deadline:
                count = sum(len(s) for s in left.values())
                raise FleetError(f"{count} buffered readings not stored after {timeout_s}s")
            time.sleep(0.5)
    finally:
        for i in range(len(fleet.agents)):
            fleet.stop_agent_process(i)


def telemetry_ledger(fleet: Fleet) -> list[GatewayLedger]:
    """One row per gateway (agent processes must be stopped)."""
    import sqlalchemy as sa

    engine = sa.create_engine(fleet.db_url)
    try:
        with engine.connect() as conn:
            dup_rows = conn.execute(sa.text(
                "SELECT gateway_id, sum(n - 1) FROM (SELECT gateway_id, count(*) AS n "
                "FROM readings GROUP BY gateway_id, meter_id, channel, ts HAVING count(*) > 1) "
                "AS twice GROUP BY gateway_id")).all()
    finally:
        engine.dispose()
    duplicated = {str(gw): int(n) for gw, n in dup_rows}
    stored = fleet.stored_seqs()
    stats = fleet.buffer_stats()
    ledger = []
    for gateway in fleet.gateway_ids():
        seqs = set(stored.get(gateway, []))
        buffered = stats.get(gateway)
        last = buffered.last_seq if buffered else 0
        ledger.append(GatewayLedger(
            gateway, last, len(seqs), duplicated.get(gateway, 0),
            sorted(set(range(1, last + 1)) - seqs),
            buffered.depth if buffered else 0, buffered.dropped_total if buffered else 0))
    return ledger
