"""A loopback TCP proxy that injects network faults: latency, dropped connections, outages.

:class:`TcpProxy` listens on a free 127.0.0.1 port and forwards every connection to a target
(a broker, a database). It runs its own asyncio loop in a background thread so synchronous
scenario code can drive it; every control method is thread-safe.

Fault model (what a flaky home Wi-Fi or a broken link does to TCP, seen from the ends):

- ``set_latency(ms)``: every chunk is delivered ``ms`` later, in order, in both directions.
- ``set_drop(p)``: each forwarded chunk has probability ``p`` of killing its connection: both
  sides are reset (RST, no FIN). Bytes are never corrupted mid-stream: on a real network TCP's
  checksum turns corruption into a retransmit or a broken connection, and MQTT or the
  PostgreSQL protocol have no way to recover a corrupted stream either.
- ``cut()``: every open connection is reset, and new ones are accepted and reset at once (the
  listening port stays ours, so :meth:`restore` cannot lose it to another process).
- ``restore()``: no latency, no drops, connections pass again.

``run_schedule`` applies a list of :class:`ScheduleStep` at offsets from now.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Action = Literal["latency", "drop", "cut", "restore"]
_CHUNK = 65536
_QUEUE_CHUNKS = 256  # per direction; a full queue stops reading (backpressure)


class ProxyError(RuntimeError):
    """The proxy could not start or a control call was invalid."""


@dataclass(frozen=True)
class ScheduleStep:
    """At ``at_s`` seconds after :meth:`TcpProxy.run_schedule`, do ``action`` (``value`` is
    milliseconds for ``latency``, a probability for ``drop``, unused otherwise)."""

    at_s: float
    action: Action
    value: float = 0.0


@dataclass(frozen=True)
class ProxyStats:
    accepted: int  # connections forwarded to the target
    refused: int  # connections reset at once while cut (or when the target was down)
    dropped: int  # connections reset by set_drop or cut
    open: int  # connections open now
    bytes_up: int  # client -> target
    bytes_down: int  # target -> client


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER 0, as a broken link looks to the peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: two directions, each a reader task and a delayed writer task."""

    def __init__(self, proxy: TcpProxy, client: asyncio.StreamWriter,
                 upstream: asyncio.StreamWriter) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        _reset(self.client)
        _reset(self.upstream)
        for task in self.tasks:
            task.cancel()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   up: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        deliver = asyncio.create_task(self._deliver(queue, writer))
        self.tasks.append(deliver)
        try:
            while data := await reader.read(_CHUNK):
                if self.proxy.roll_drop():
                    self.proxy.count_drop()
                    self.reset()
                    return
                self.proxy.count_bytes(len(data), up)
                await queue.put((time.monotonic() + self.proxy.latency_s, data))
            if not self.closed:
                await queue.put((0.0, b""))  # EOF: half-close the other side once delivered
                await asyncio.wait({deliver})
        except (ConnectionError, OSError):
            self.reset()

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes]],
                       writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            self.reset()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` with injectable faults.

    ``start()`` binds (``port`` is then the listening port) and returns once listening;
    ``stop()`` resets every connection and stops the thread. ``seed`` makes drops
    reproducible for a given traffic pattern.
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1",
                 listen_port: int = 0, seed: int = 0, name: str = "proxy") -> None:
        if target_host not in ("127.0.0.1", "::1", "localhost"):
            raise ProxyError(f"target_host {target_host!r}: loopback only")
        self.target_host, self.target_port, self.name = target_host, target_port, name
        self.port = listen_port
        self.latency_s = 0.0
        self._drop_p = 0.0
        self._cut = False
        self._random = random.Random(seed)
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._counts = {"accepted": 0, "refused": 0, "dropped": 0, "up": 0, "down": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name=f"tcp-proxy-{self.name}")
        self._thread.start()
        self.port = ready.result(timeout=10)
        log.info("%s: 127.0.0.1:%d -> %s:%d", self.name, self.port, self.target_host,
                 self.target_port)

    def _run(self, ready: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            server = loop.run_until_complete(asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True))
        except OSError as exc:
            ready.set_exception(ProxyError(f"{self.name}: cannot listen: {exc}"))
            loop.close()
            return
        self._server = server
        ready.set_result(int(server.sockets[0].getsockname()[1]))
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all(count=False)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- controls (thread-safe) ---------------------------------------------------------------

    def set_latency(self, ms: float) -> None:
        if ms < 0:
            raise ProxyError(f"latency {ms} ms: must be >= 0")
        self.latency_s = ms / 1000.0

    def set_drop(self, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ProxyError(f"drop probability {probability}: must be within 0..1")
        self._drop_p = probability

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        self._cut = True
        self._call(lambda: self._reset_all(count=True))

    def restore(self) -> None:
        self._cut = False
        self.latency_s = 0.0
        self._drop_p = 0.0

    def apply(self, step: ScheduleStep) -> None:
        log.info("%s: %s %s", self.name, step.action, step.value or "")
        if step.action == "latency":
            self.set_latency(step.value)
        elif step.action == "drop":
            self.set_drop(step.value)
        elif step.action == "cut":
            self.cut()
        elif step.action == "restore":
            self.restore()
        else:
            raise ProxyError(f"unknown schedule action {step.action!r}")

    def run_schedule(self, steps: Sequence[ScheduleStep]) -> concurrent.futures.Future[None]:
        """Apply ``steps`` at their offsets from now; the future completes after the last."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def runner() -> None:
            start = time.monotonic()
            try:
                for step in sorted(steps, key=lambda s: s.at_s):
                    time.sleep(max(0.0, start + step.at_s - time.monotonic()))
                    self.apply(step)
            except ProxyError as exc:
                done.set_exception(exc)
                return
            done.set_result(None)

        threading.Thread(target=runner, daemon=True, name=f"{self.name}-schedule").start()
        return done

    def stats(self) -> ProxyStats:
        c = self._counts
        return ProxyStats(c["accepted"], c["refused"], c["dropped"], len(self._links),
                          c["up"], c["down"])

    # -- loop side ----------------------------------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            raise ProxyError(f"{self.name}: not started")

        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)

    def roll_drop(self) -> bool:
        return self._drop_p > 0 and self._random.random() < self._drop_p

    def count_drop(self) -> None:
        self._counts["dropped"] += 1

    def count_bytes(self, n: int, up: bool) -> None:
        self._counts["up" if up else "down"] += n

    def _reset_all(self, count: bool) -> None:
        for link in list(self._links):
            if not link.closed and count:
                self._counts["dropped"] += 1
            link.reset()

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        if self._cut:
            self._counts["refused"] += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host,
                                                                 self.target_port)
        except OSError:
            self._counts["refused"] += 1
            _reset(writer)
            return
        self._counts["accepted"] += 1
        link = _Link(self, writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(link.pump(reader, up_writer, up=True),
                                 link.pump(up_reader, writer, up=False))
        finally:
            self._links.discard(link)
            if not link.closed:
                link.closed = True
                writer.close()
                up_writer.close()
