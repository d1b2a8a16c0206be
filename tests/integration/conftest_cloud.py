"""Fixtures and helpers for the cloud_sync integration tests (imported by test_cloud_*.py).

Owned by the cloud_sync ingestion part; other parts keep their helpers in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import make_url

from cloud_sync.bootstrap import CloudService, build_service, build_store, load_settings
from cloud_sync.db import migrate
from cloud_sync.settings import CloudSettings
from cloud_sync.shadows.service import ShadowService
from protocols import Reading, TelemetryAck, TelemetryBatch, Unit, decode, encode, topics
from tests.auth_helpers import headers, operator_key
from tests.services import Mosquitto, running_mosquitto, throwaway_postgres
from tests.tls_broker import CLOUD_IDENTITY, TlsBroker

GW = "gw-1"
TS0 = 1_700_000_000_000
# The ingestion client may fall behind a burst: the broker must queue, not drop (Mosquitto's
# default max_queued_messages is 1000 and drops silently past it).
BROKER_EXTRA = "max_queued_messages 100000"


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition",
               ) -> None:
    """Poll a condition that has no event to await (a DB count, a counter)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """``wait_until`` for async tests: poll without blocking the event loop."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def make_batch(first_seq: int, n: int, gw: str = GW, meter: str = "m1",
               channel: str = "power_w") -> TelemetryBatch:
    return TelemetryBatch(gateway_id=gw, readings=[
        Reading(meter_id=meter, channel=channel, value=float(first_seq + i), unit=Unit.WATT,
                ts=TS0 + (first_seq + i) * 1000, seq=first_seq + i) for i in range(n)])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.sqlite'}"
        return
    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    with running_mosquitto(workdir, BROKER_EXTRA) as running:
        yield running


def cloud_settings(db_url: str, broker: Mosquitto, tmp_path: Path, **extra: object,
                   ) -> CloudSettings:
    options: dict[str, object] = {
        "db_url": db_url, "mqtt_url": broker.url, "data_dir": tmp_path,
        "client_id": f"cloud-{uuid.uuid4().hex[:8]}", "db_statement_timeout_s": 2.0,
        "db_connect_timeout_s": 1.0, "db_breaker_reset_s": 1.0, "ingest_retry_max_s": 0.5,
    }
    options.update(extra)
    return load_settings(**options)


def tls_cloud_settings(tls: TlsBroker, tmp_path: Path, client_id: str, **extra: object,
                       ) -> CloudSettings:
    """The cloud on SQLite in ``tmp_path``, connected to ``tls`` with the cloud identity."""
    me = tls.identity(CLOUD_IDENTITY)
    return load_settings(db_url=f"sqlite:///{tmp_path / 'cloud.sqlite'}", mqtt_url=tls.url,
                         mqtt_ca_file=me.ca, mqtt_cert_file=me.cert, mqtt_key_file=me.key,
                         data_dir=tmp_path / "cloud", client_id=client_id, **extra)


def register(settings: CloudSettings, *gateways: str) -> None:
    store = build_store(settings)
    try:
        migrate.upgrade(store.engine)
        for gw in gateways:
            store.add_gateway(gw)
    finally:
        store.engine.dispose()


def started(settings: CloudSettings) -> CloudService:
    service = build_service(settings)
    service.start()
    assert service.wait_started(30), "cloud service did not start"
    assert service.bus.subscribed.wait(10), "ingestion did not subscribe"
    return service


@pytest.fixture
def cloud(db_url: str, broker: Mosquitto, tmp_path: Path) -> Iterator[CloudService]:
    settings = cloud_settings(db_url, broker, tmp_path)
    register(settings, GW, "gw-2")
    service = started(settings)
    try:
        yield service
    finally:
        service.stop()


def shadows_of(service: CloudService) -> ShadowService:
    return next(s for s in service.services if isinstance(s, ShadowService))


def api_client(service: CloudService, api_key: str | None = None) -> httpx.AsyncClient:
    """An in-process client of ``service``'s API, authenticated with ``api_key`` (default: a
    new operator key)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app),
                             base_url="http://cloud",
                             headers=headers(api_key or operator_key(service.engine)))


class Edge:
    """A test publisher that also collects the cloud's TelemetryAcks (like the edge uplink)."""

    _ids = itertools.count()

    def __init__(self, broker: Mosquitto) -> None:
        self.acked: set[tuple[str, int]] = set()
        self.ack_messages = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"edge-{next(self._ids)}-{uuid.uuid4().hex[:6]}")
        self.client.max_inflight_messages_set(50)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("hw/+/telemetry/ack", qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        ack = decode(TelemetryAck, bytes(msg.payload))
        with self._lock:
            self.ack_messages += 1
            for r in ack.ranges:
                self.acked.update((ack.gateway_id, s) for s in range(r.first, r.last + 1))

    def send(self, batch: TelemetryBatch) -> None:
        self.publish(topics.telemetry(batch.gateway_id), encode(batch))

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS

    def wait_acked(self, gw: str, seqs: range, timeout: float = 20.0) -> None:
        wanted = {(gw, s) for s in seqs}
        wait_until(lambda: wanted <= self.acked, timeout, f"acks for {gw} {seqs}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def edge(broker: Mosquitto) -> Iterator[Edge]:
    client = Edge(broker)
    try:
        yield client
    finally:
        client.close()


class TcpProxy:
    """A TCP forwarder the test can cut (every connection dropped, new ones refused) and
    restore on the same port: a database outage as the service sees it."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.port = 0
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.port))
        except OSError:
            listener.close()
            raise
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def close(self) -> None:
        self.cut()

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone would not on Linux
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class DbOutage:
    """Make the database unusable for the service and bring it back.

    SQLite: another connection holds an EXCLUSIVE lock, so every write times out.
    PostgreSQL: the service talks through a :class:`TcpProxy` that is cut.
    """

    def __init__(self, url: str) -> None:
        self._lock_conn: sqlite3.Connection | None = None
        self._proxy: TcpProxy | None = None
        self.url = url
        if url.startswith("postgresql"):
            parsed = make_url(url)
            self._proxy = TcpProxy(parsed.port or 5432, parsed.host or "127.0.0.1")
            self.url = parsed.set(port=self._proxy.port).render_as_string(hide_password=False)

    def begin(self) -> None:
        if self._proxy is not None:
            self._proxy.cut()
            return
        path = make_url(self.url).database
        assert path
        self._lock_conn = sqlite3.connect(path, isolation_level=None)
        self._lock_conn.execute("BEGIN EXCLUSIVE")

    def close(self) -> None:
        self.end()
        if self._proxy is not None:
            self._proxy.close()

    def end(self) -> None:
        if self._proxy is not None:
            if not self._proxy.listening:
                self._proxy.restore()
        elif self._lock_conn is not None:
            self._lock_conn.execute("ROLLBACK")
            self._lock_conn.close()
            self._lock_conn = None


@pytest.fixture
def outage(db_url: str) -> Iterator[DbOutage]:
    """A database outage the test starts and ends (``db_url``: SQLite lock or cut TCP)."""
    control = DbOutage(db_url)
    yield control
    control.close()
