"""Re-ingest a dead letter after the cause is fixed (e.g. the gateway is now registered).

Idempotent: the readings go through the same ``ON CONFLICT DO NOTHING`` path, so replaying
twice stores once. A payload that is still bad keeps its row, gets the new reason, and raises
``ReplayRejected``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cloud_sync.ack_ranges import compact
from cloud_sync.classify import Rejection, check_registered, parse_telemetry
from cloud_sync.errors import BrokerUnavailable, NotFound, ReplayRejected
from cloud_sync.ports import TelemetryQueries
from protocols import TelemetryAck, encode, topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    dead_letter_id: int
    gateway_id: str
    readings: int
    inserted: int
    replayed_at: int


def replay_dead_letter(queries: TelemetryQueries, dead_letter_id: int, now_ms: int,
                       publish: Callable[[str, bytes], None] | None = None) -> ReplayResult:
    """Store the dead letter's batch; ack it to the edge when ``publish`` is given.

    Raises ``NotFound``, ``ReplayRejected`` or ``StorageUnavailable``.
    """
    letter = queries.dead_letter(dead_letter_id)
    if letter is None:
        raise NotFound(f"dead letter {dead_letter_id} does not exist")
    verdict = parse_telemetry(letter.topic, letter.payload)
    if not isinstance(verdict, Rejection):
        known = {verdict.gateway_id} if queries.gateway_exists(verdict.gateway_id) else set()
        verdict = check_registered(verdict, known) or verdict
    if isinstance(verdict, Rejection):
        queries.set_dead_letter_reason(dead_letter_id, verdict.reason)
        raise ReplayRejected(verdict.reason)
    inserted = queries.replay_stored(dead_letter_id, verdict, now_ms)
    if publish is not None:
        ack = TelemetryAck(gateway_id=verdict.gateway_id,
                           ranges=compact(r.seq for r in verdict.readings if r.seq is not None))
        try:
            publish(topics.telemetry_ack(verdict.gateway_id), encode(ack))
        except BrokerUnavailable as exc:
            log.warning("ack of replayed dead letter %d not published: %s", dead_letter_id, exc)
    return ReplayResult(dead_letter_id, verdict.gateway_id, len(verdict.readings), inserted,
                        now_ms)
