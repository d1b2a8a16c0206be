"""The fault proxy with real traffic: Mosquitto (MQTT) and PostgreSQL through it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import make_url

from simulator.faults.proxy import ScheduleStep, TcpProxy
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class Client:
    """A paho client on a background loop with events for connect, disconnect and messages."""

    def __init__(self, port: int, name: str) -> None:
        self.connected, self.disconnected = threading.Event(), threading.Event()
        self.received: list[bytes] = []
        self.got_all = threading.Event()
        self.expect = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), f"{name} did not connect through the proxy"

    def _message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.received.append(msg.payload)
        if len(self.received) >= self.expect:
            self.got_all.set()

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def proxy_to(port: int) -> Iterator[TcpProxy]:
    with TcpProxy(port, name="test") as proxy:
        yield proxy


def test_mqtt_messages_pass_the_proxy_intact_in_both_directions(mosquitto: Mosquitto) -> None:
    with proxy_to(mosquitto.port) as proxy:
        sub, pub = Client(proxy.port, "sub"), Client(proxy.port, "pub")
        try:
            sub.subscribe("t/x")
            sub.expect = 200
            payloads = [f"m{i}".encode() * 50 for i in range(200)]
            for payload in payloads:
                pub.client.publish("t/x", payload, qos=1)
            assert sub.got_all.wait(20)
            assert sub.received == payloads
        finally:
            sub.close()
            pub.close()
        stats = proxy.stats()
    assert stats.accepted == 2 and stats.dropped == 0
    assert stats.bytes_up > 200 * 100 and stats.bytes_down > 200 * 100


def test_latency_delays_every_message_by_at_least_the_setting(mosquitto: Mosquitto) -> None:
    with proxy_to(mosquitto.port) as proxy:
        sub, pub = Client(proxy.port, "sub"), Client(proxy.port, "pub")
        try:
            sub.subscribe("t/lat")
            proxy.set_latency(150)
            sub.expect = 1
            sent = time.monotonic()
            pub.client.publish("t/lat", b"late", qos=1)
            assert sub.got_all.wait(10)
            # Up through the proxy, then down through it again: two delayed hops at least.
            assert time.monotonic() - sent >= 0.3
            assert sub.received == [b"late"]
        finally:
            sub.close()
            pub.close()


def test_a_drop_resets_the_connection_and_the_client_reconnects(mosquitto: Mosquitto) -> None:
    with proxy_to(mosquitto.port) as proxy:
        pub = Client(proxy.port, "pub")
        try:
            pub.connected.clear()
            proxy.set_drop(1.0)
            pub.client.publish("t/drop", b"x", qos=1)
            assert pub.disconnected.wait(10), "a dropped connection must reach the client"
            proxy.set_drop(0.0)
            assert pub.connected.wait(10), "the client reconnects once drops stop"
        finally:
            pub.close()
        assert proxy.stats().dropped >= 1


def test_cut_refuses_connections_until_restore_on_a_schedule(mosquitto: Mosquitto) -> None:
    with proxy_to(mosquitto.port) as proxy:
        sub = Client(proxy.port, "sub")
        try:
            sub.connected.clear()
            done = proxy.run_schedule([ScheduleStep(0.0, "cut"), ScheduleStep(2.5, "restore")])
            assert sub.disconnected.wait(10), "cut must break open connections"
            done.result(timeout=10)
            assert sub.connected.wait(10), "after restore the client gets back in"
            stats = proxy.stats()
            assert stats.dropped >= 1
            assert stats.refused >= 1, "reconnects during the cut must be refused"
        finally:
            sub.close()


def _libpq_url(sqlalchemy_url: str, port: int) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql", host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)


@pytest.mark.postgres
def test_postgres_queries_fail_while_cut_and_work_after_restore(postgres_url: str) -> None:
    with proxy_to(make_url(postgres_url).port or 5432) as proxy:
        url = _libpq_url(postgres_url, proxy.port)
        with psycopg.connect(url, connect_timeout=3) as conn:
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
            proxy.cut()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=3)
        proxy.restore()
        proxy.set_latency(20)
        with psycopg.connect(url, connect_timeout=3) as conn:
            assert conn.execute("SELECT 'back'").fetchone() == ("back",)
        stats = proxy.stats()
    assert stats.accepted == 2 and stats.refused == 1 and stats.dropped == 1
