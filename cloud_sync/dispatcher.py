"""The command dispatcher: publishes outbox rows to ``hw/{gw}/commands`` until acked or expired.

One thread per process (started by ``bootstrap`` unless ``dispatcher_enabled`` is off). It
sleeps on an event the API sets when it creates a command, or until the next outbox row is
due (at most ``max_idle_s``, so rows written by other replicas or left by a crash are picked
up). Each round expires overdue commands, then claims due rows, publishes them (QoS 1), waits
for the PUBACKs (bounded) and records them as sent; a row stays due every ``redelivery_s``
until the gateway acks, because a PUBACK is not delivery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from cloud_sync.db.store import now_ms
from cloud_sync.errors import BrokerUnavailable, StorageUnavailable
from cloud_sync.ports import CommandBus, OutboxStore, PublishHandle, StoredCommand
from cloud_sync.worker_thread import WorkerThread
from observability.tracing import current_traceparent, span
from protocols import encode, topics
from protocols.commands import Action, Command, Priority

log = logging.getLogger(__name__)


@dataclass
class DispatchStats:
    """Counters for operators and tests; never reset."""

    rounds: int = 0
    published: int = 0  # PUBACKed publishes, first sends and re-sends alike
    republished: int = 0  # of which re-sends of a command published before
    unconfirmed: int = 0  # claimed but not PUBACKed in time: due again at once
    expired: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def command_message(command: StoredCommand, traceparent: str | None = None) -> Command:
    """The wire message for a stored command; ``traceparent`` (the publish span's, else the
    stored one) lets the gateway continue the command's trace."""
    return Command(command_id=command.command_id, gateway_id=command.gateway_id,
                   device_id=command.local_id, action=Action(command.action),
                   params=command.params, priority=Priority(command.priority),
                   issued_at=command.created_at, expires_at=command.expires_at,
                   traceparent=traceparent or command.traceparent)


class CommandDispatcher(WorkerThread):
    """``start``/``stop`` are idempotent; ``step`` runs one round (tests call it directly)."""

    thread_name = "command-dispatcher"

    def __init__(self, outbox: OutboxStore, bus: CommandBus, *, redelivery_s: float = 10.0,
                 puback_timeout_s: float = 5.0, batch: int = 50, max_idle_s: float = 1.0,
                 now_ms: Callable[[], int] = now_ms) -> None:
        super().__init__()
        self._outbox = outbox
        self._bus = bus
        self._redelivery_ms = int(redelivery_s * 1000)
        self._puback_timeout_s = puback_timeout_s
        self._batch = batch
        self._max_idle_s = max_idle_s
        self._now_ms = now_ms
        self._wake = threading.Event()
        self.stats = DispatchStats()

    def wake(self) -> None:
        """Dispatch now (called after a command is committed)."""
        self._wake.set()

    def _wake_for_stop(self) -> None:
        self._wake.set()




    def step(self) -> tuple[int, int]:
        """Expire overdue commands, then one claim: ``(claimed, confirmed)``."""
        self.stats.rounds += 1
        self.stats.expired += self._outbox.expire_due(self._now_ms())
        claimed, confirmed = self._outbox.dispatch_due(self._now_ms, self._batch,
                                                       self._redelivery_ms, self._publish)
        self.stats.unconfirmed += claimed - confirmed
        return claimed, confirmed

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                claimed, confirmed = self.step()
            except (StorageUnavailable, BrokerUnavailable) as exc:
                self.stats.failures += 1
                log.warning("command dispatch failed (%s); retrying", exc)
                claimed, confirmed = 0, -1
            except Exception:  # supervisor: one bad round must not stop dispatching
                self.stats.failures += 1
                log.exception("command dispatcher round failed; continuing")
                claimed, confirmed = 0, -1
            if claimed and confirmed == claimed and claimed == self._batch:
                backoff = 0.0
                continue  # a full batch went out: more may be due
            if confirmed < claimed or confirmed < 0:
                backoff = min(max(backoff * 2, 0.2), 5.0)  # broker or database trouble
                self._stop.wait(backoff)
                continue
            backoff = 0.0
            self._wake.wait(self._idle_s())

    def _idle_s(self) -> float:
        try:
            due = self._outbox.next_due_ms()
        except StorageUnavailable:
            return self._max_idle_s
        if due is None:
            return self._max_idle_s
        return min(self._max_idle_s, max(0.0, (due - self._now_ms()) / 1000))

    def _publish(self, claimed: Sequence[StoredCommand]) -> list[str]:
        """Publish every claimed command, then wait (bounded, in total) for the PUBACKs."""
        handles: list[tuple[StoredCommand, PublishHandle]] = []
        for command in claimed:
            try:
                with span("command.publish", traceparent=command.traceparent,
                          attributes={"command.id": command.command_id,
                                      "command.attempt": command.attempts + 1}):
                    payload = encode(command_message(command, current_traceparent()))
                    handle = self._bus.publish_tracked(topics.commands(command.gateway_id),
                                                       payload)
            except BrokerUnavailable as exc:
                log.warning("publishing commands stopped: %s", exc)
                break
            handles.append((command, handle))
        deadline = time.monotonic() + self._puback_timeout_s
        confirmed: list[str] = []
        for command, handle in handles:
            if handle.wait(max(0.0, deadline - time.monotonic())):
                confirmed.append(command.command_id)
                self.stats.published += 1
                self.stats.republished += command.attempts > 0
        return confirmed
