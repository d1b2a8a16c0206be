"""``JobsService``: the AWS IoT Jobs device MQTT API on our broker.

Registered on the :class:`~cloud_sync.routing.TopicRouter` for the four request topics. The
network thread only queues (:meth:`offer`); one worker thread runs each request in one
database transaction (``SqlJobsStore``), publishes the ``/accepted`` or ``/rejected`` reply
after the commit, and only then PUBACKs, so a crash makes the broker redeliver (a redelivered
update with the same ``clientToken`` is answered, not applied twice). The same thread sends
notify-next for every thing whose next execution changed (claimed in the database, so with
several replicas each notification goes out once) and times out executions whose step or
in-progress timer ran out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from cloud_sync.db.jobs_store import SqlJobsStore
from cloud_sync.errors import BrokerUnavailable, StorageUnavailable
from cloud_sync.ports import InboundMessage, PublishHandle
from cloud_sync.routing import TopicRouter
from cloud_sync.worker_thread import WorkerThread
from protocols import jobs as wire
from protocols.errors import InvalidMessage

__all__ = ["JOBS_FILTERS", "JobsService"]

log = logging.getLogger(__name__)
JOBS_FILTERS = ("$aws/things/+/jobs/get", "$aws/things/+/jobs/start-next",
                "$aws/things/+/jobs/+/get", "$aws/things/+/jobs/+/update")
_WAKE = InboundMessage("", b"", 0, 0)  # sentinel: flush notifications now
PUBACK_TIMEOUT_S = 2.0


class JobsBus(Protocol):
    def ack(self, message: InboundMessage) -> None: ...

    def publish(self, topic: str, payload: bytes) -> None: ...

    def publish_tracked(self, topic: str, payload: bytes) -> PublishHandle: ...


@dataclass
class JobsStats:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    overflowed: int = 0
    notified: int = 0
    timed_out: int = 0
    db_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class JobsService(WorkerThread):
    thread_name = "jobs"

    def __init__(self, store: SqlJobsStore, bus: JobsBus, *, queue_size: int = 256,
                 retry_max_s: float = 5.0, sweep_interval_s: float = 5.0,
                 now_ms: Callable[[], int] = _wall_ms) -> None:
        super().__init__()
        self._store = store
        self._bus = bus
        self._queue: queue.Queue[InboundMessage] = queue.Queue(maxsize=queue_size)
        self._retry_max_s = retry_max_s
        self._sweep_interval_s = sweep_interval_s
        self._now_ms = now_ms
        self.stats = JobsStats()

    def register(self, router: TopicRouter) -> None:
        for topic_filter in JOBS_FILTERS:
            router.add(topic_filter, self.offer)

    def offer(self, message: InboundMessage) -> bool:
        """Queue without blocking; ``False`` when full (left un-acked: the broker resends)."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.stats.overflowed += 1
            return False
        self.stats.received += 1
        return True

    def wake(self) -> None:
        """Send pending notify-next soon (executions were queued or canceled elsewhere)."""
        # a full queue: the worker is busy and flushes after each message anyway
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE)

    def _wake_for_stop(self) -> None:
        self.wake()

    def _run(self) -> None:
        next_sweep = 0.0
        while not self._stop.is_set():
            try:
                message = self._queue.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                message = None
            try:
                if message is not None and message is not _WAKE:
                    self._handle_with_retry(message)
                if time.monotonic() >= next_sweep:
                    self.stats.timed_out += self._store.sweep_timeouts(self._now_ms())
                    next_sweep = time.monotonic() + self._sweep_interval_s
                self.flush_notifications()
            except StorageUnavailable as exc:
                self.stats.db_failures += 1
                log.warning("jobs housekeeping failed (%s); retrying", exc)
                self._stop.wait(1.0)
            except Exception:  # supervisor: one bad message must not stop the service
                log.exception("jobs worker step failed")

    def _handle_with_retry(self, message: InboundMessage) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                self.handle(message)
                return
            except StorageUnavailable as exc:
                self.stats.db_failures += 1
                log.warning("jobs request on %s failed (%s); retrying, not acked",
                            message.topic, exc)
            self._stop.wait(delay)
            delay = min(delay * 2, self._retry_max_s)

    def handle(self, message: InboundMessage) -> None:
        """Answer one request, then PUBACK it. Raises ``StorageUnavailable``."""
        now = self._now_ms()
        token = wire.client_token_of(message.payload)
        try:
            topic = wire.parse_topic(message.topic)
            if topic.suffix is not None or topic.op in ("notify", "notify_next"):
                raise wire.JobsError(wire.JobsErrorCode.INVALID_TOPIC,
                                     f"{message.topic} is not a request topic")
            request = wire.parse_request(topic.op, message.payload)
            body = self._execute(topic, request, now)
            reply: dict[str, Any] = {**body, "timestamp": now // 1000}
            if token is not None:
                reply["clientToken"] = token
            accepted = True
        except (wire.JobsError, InvalidMessage) as exc:
            error = exc if isinstance(exc, wire.JobsError) else wire.JobsError(
                wire.JobsErrorCode.INVALID_TOPIC, str(exc))
            reply, accepted = wire.error_payload(error, token, now // 1000), False
        self._reply(message, accepted, reply)

    def _execute(self, topic: wire.JobsTopic, request: Any, now: int) -> dict[str, Any]:
        if topic.op == "get_pending":
            return self._store.get_pending(topic.thing)
        if topic.op == "start_next":
            found = self._store.start_next(topic.thing, request, now)
            return {} if found is None else {"execution": found}
        assert topic.job_id is not None
        if topic.op == "describe":
            return self._store.describe(topic.thing, topic.job_id, request)
        return self._store.update(topic.thing, topic.job_id, request, now)

    def _reply(self, message: InboundMessage, accepted: bool, reply: dict[str, Any]) -> None:
        try:
            self._bus.publish(wire.reply_topic(message.topic, accepted),
                              json.dumps(reply).encode())
        except BrokerUnavailable as exc:  # un-acked: redelivered after the reconnect
            log.warning("jobs reply to %s not sent (%s)", message.topic, exc)
            return
        if accepted:
            self.stats.accepted += 1
        else:
            self.stats.rejected += 1
        try:
            self._bus.ack(message)
        except BrokerUnavailable as exc:
            log.warning("PUBACK for %s not sent (%s); it will be redelivered", message.topic,
                        exc)

    def flush_notifications(self) -> int:
        """Publish notify-next for every thing whose next execution changed."""
        now_s = self._now_ms() // 1000

        def publish(thing: str, execution: dict[str, Any] | None) -> bool:
            payload: dict[str, Any] = {"timestamp": now_s}
            if execution is not None:
                payload["execution"] = execution
            try:
                handle = self._bus.publish_tracked(wire.request_topic(thing, "notify_next"),
                                                   json.dumps(payload).encode())
            except BrokerUnavailable:
                return False
            return handle.wait(PUBACK_TIMEOUT_S)
        sent = self._store.publish_notifications(publish)
        self.stats.notified += sent
        return sent
