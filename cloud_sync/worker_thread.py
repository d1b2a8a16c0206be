"""The cloud's background workers (ingestion writer, command dispatcher, ack recorder, MQTT
request services) each run one daemon thread that loops until stopped; this is that lifecycle,
written once, and :class:`MessageWorker`, the shape every MQTT request service shares."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Generic, Protocol, TypeVar

from cloud_sync.errors import StorageUnavailable
from cloud_sync.ports import InboundMessage

log = logging.getLogger(__name__)


class WorkerThread:
    """``start``/``stop`` are idempotent; a subclass implements ``_run``, which must return soon
    after ``self._stop`` is set (wait on it, never sleep), and names its thread."""

    thread_name = "worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to finish its current step and wait for it."""
        self._stop.set()
        self._wake_for_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread = None

    def _wake_for_stop(self) -> None:
        """Wake a loop blocked on something other than ``self._stop`` (default: nothing)."""

    def _run(self) -> None:
        raise NotImplementedError


class QueueCounters(Protocol):
    """The counters :class:`MessageWorker` keeps in a subclass's stats."""

    received: int
    overflowed: int
    db_failures: int


S = TypeVar("S", bound=QueueCounters)


class MessageWorker(WorkerThread, Generic[S]):
    """One thread handling MQTT messages one at a time, in arrival order.

    paho's network thread only calls :meth:`offer` (never blocks: a full queue refuses, the
    message stays un-acked and the broker resends it). :meth:`handle` does the work and sends
    the PUBACK last; while it raises ``StorageUnavailable`` it is retried with backoff and
    nothing is acked. Any other exception is logged and the worker goes on with the next one.
    Subclasses set ``thread_name``, ``stats`` (with :class:`QueueCounters`) and ``handle``.
    """

    stats: S

    def __init__(self, *, queue_size: int, retry_max_s: float) -> None:
        super().__init__()
        # None is the wake-up a stop puts in, so the loop never polls with a timeout
        self._queue: queue.Queue[InboundMessage | None] = queue.Queue(maxsize=queue_size)
        self._retry_max_s = retry_max_s

    def offer(self, message: InboundMessage) -> bool:
        """Queue without blocking; ``False`` when full (left un-acked: the broker resends)."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.stats.overflowed += 1
            return False
        self.stats.received += 1
        return True

    def handle(self, message: InboundMessage) -> None:
        """Do the work and PUBACK; raise ``StorageUnavailable`` to be retried (not acked)."""
        raise NotImplementedError

    def _wake_for_stop(self) -> None:
        with contextlib.suppress(queue.Full):  # full: the loop is not waiting anyway
            self._queue.put_nowait(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._queue.get()
            if message is None:
                continue
            try:
                self._handle_with_retry(message)
            except Exception:  # supervisor: one bad message must not stop the worker
                log.exception("%s: handling the message on %s failed", self.thread_name,
                              message.topic)

    def _handle_with_retry(self, message: InboundMessage) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                self.handle(message)
                return
            except StorageUnavailable as exc:
                self.stats.db_failures += 1
                log.warning("%s: message on %s not handled (%s); retrying, not acked",
                            self.thread_name, message.topic, exc)
            self._stop.wait(delay)
            delay = min(delay * 2, self._retry_max_s)
