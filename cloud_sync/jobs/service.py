"""``JobsService``: the AWS IoT Jobs device MQTT API on our broker.

Registered on the :class:`~cloud_sync.routing.TopicRouter` for the four request topics. The
network thread only queues (:meth:`offer`); one worker thread runs each request in one
database transaction (``SqlJobsStore``), publishes the ``/accepted`` or ``/rejected`` reply
after the commit, and only then PUBACKs, so a crash makes the broker redeliver (a redelivered
update with the same ``clientToken`` is answered, not applied twice). A second thread
(:class:`JobsHousekeeper`) sends notify-next for every thing whose next execution changed
(claimed in the database, so with several replicas each notification goes out once) and times
out executions whose step or in-progress timer ran out.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_sync.db.jobs_store import SqlJobsStore
from cloud_sync.db.store import now_ms
from cloud_sync.errors import BrokerUnavailable, StorageUnavailable
from cloud_sync.ports import InboundMessage, PublishHandle, ReplyBus
from cloud_sync.routing import TopicRouter
from cloud_sync.worker_thread import MessageWorker, WorkerThread
from protocols import jobs as wire
from protocols.errors import InvalidMessage

__all__ = ["JOBS_FILTERS", "JobsHousekeeper", "JobsService"]

log = logging.getLogger(__name__)
JOBS_FILTERS = ("$aws/things/+/jobs/get", "$aws/things/+/jobs/start-next",
                "$aws/things/+/jobs/+/get", "$aws/things/+/jobs/+/update")
PUBACK_TIMEOUT_S = 2.0


class JobsBus(ReplyBus, Protocol):
    def publish_tracked(self, topic: str, payload: bytes) -> PublishHandle: ...


@dataclass
class JobsStats:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    overflowed: int = 0
    db_failures: int = 0


class JobsHousekeeper(WorkerThread):
    """Times out executions past their step or in-progress timer (every ``sweep_interval_s``)
    and sends pending notify-next; :meth:`wake` makes it send them now."""

    thread_name = "jobs-housekeeping"

    def __init__(self, store: SqlJobsStore, bus: JobsBus, *, sweep_interval_s: float = 5.0,
                 now_ms: Callable[[], int] = now_ms) -> None:
        super().__init__()
        self._store = store
        self._bus = bus
        self._sweep_interval_s = sweep_interval_s
        self._now_ms = now_ms
        self._wake = threading.Event()
        self.notified = 0
        self.timed_out = 0

    def wake(self) -> None:
        self._wake.set()

    def _wake_for_stop(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        next_sweep = 0.0
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_sweep - time.monotonic()))
            self._wake.clear()
            try:
                if time.monotonic() >= next_sweep:
                    self.timed_out += self._store.sweep_timeouts(self._now_ms())
                    next_sweep = time.monotonic() + self._sweep_interval_s
                self.flush_notifications()
            except StorageUnavailable as exc:
                log.warning("jobs housekeeping failed (%s); retrying", exc)
                self._stop.wait(1.0)
            except Exception:  # supervisor: housekeeping must go on
                log.exception("jobs housekeeping step failed")

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
        self.notified += sent
        return sent


class JobsService(MessageWorker[JobsStats]):
    """Answers requests (``handle``, via the shared :class:`MessageWorker` loop); after each
    one its housekeeper sends whatever notify-next the request caused."""

    thread_name = "jobs"

    def __init__(self, store: SqlJobsStore, bus: JobsBus, housekeeper: JobsHousekeeper, *,
                 queue_size: int = 256, retry_max_s: float = 5.0,
                 now_ms: Callable[[], int] = now_ms) -> None:
        super().__init__(queue_size=queue_size, retry_max_s=retry_max_s)
        self._store = store
        self._bus = bus
        self.housekeeper = housekeeper
        self._now_ms = now_ms
        self.stats = JobsStats()

    def register(self, router: TopicRouter) -> None:
        for topic_filter in JOBS_FILTERS:
            router.add(topic_filter, self.offer)

    def wake(self) -> None:
        """Send pending notify-next soon (executions were queued or canceled elsewhere)."""
        self.housekeeper.wake()

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
        self.housekeeper.wake()

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
