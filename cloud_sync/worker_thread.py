"""The cloud's background workers (ingestion writer, command dispatcher, ack recorder) each run
one daemon thread that loops until stopped; this is that lifecycle, written once."""

from __future__ import annotations

import threading


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
