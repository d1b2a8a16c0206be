"""``PahoIngestBus``: the paho-mqtt 2.x adapter behind ``IngestBus``.

MQTT 5 (plain, or TLS with a client certificate), manual acks, a persistent session
(``clean_start=False`` + session expiry) and a Receive Maximum equal to the worker's queue size:
the broker then holds everything we have not acked, redelivers it after a crash or reconnect,
and never sends more than we can queue.
Publishing and acking go through a circuit breaker so a dead broker fails fast.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_sync.breaker import CircuitBreaker, CircuitOpen
from cloud_sync.errors import BrokerUnavailable, SettingsError
from cloud_sync.ports import InboundMessage

log = logging.getLogger(__name__)
TELEMETRY_FILTER = "hw/+/telemetry"
COMMAND_ACK_FILTER = "hw/+/commands/ack"
SESSION_EXPIRY_S = 24 * 3600


class PahoPublishHandle:
    """A QoS 1 publish in flight: ``wait`` is True once the broker PUBACKed it."""

    def __init__(self, info: mqtt.MQTTMessageInfo) -> None:
        self._info = info

    def wait(self, timeout_s: float) -> bool:
        try:
            self._info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return self._info.is_published()


@dataclass(frozen=True)
class MqttTls:
    """TLS to the broker: ``ca_file`` (``None``: the system's CAs) and the cloud's client
    certificate, whose CN is the identity the broker's ACL grants the cloud's topics."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class PahoIngestBus:
    """Connects in the background (paho's own thread) and reconnects with backoff."""

    def __init__(self, host: str, port: int, *, client_id: str,
                 sink: Callable[[InboundMessage], bool],
                 topic_filter: str | Sequence[str] | Callable[[], Sequence[str]] = TELEMETRY_FILTER,
                 receive_maximum: int = 64,
                 keepalive_s: int = 30, breaker: CircuitBreaker | None = None,
                 tls: MqttTls | None = None) -> None:
        """Raises ``SettingsError`` when a TLS file cannot be loaded."""
        self._host, self._port = host, port
        self._sink = sink
        # several filters share the connection, the session and the Receive Maximum; the
        # sink routes each message by its topic. A callable is asked at every CONNACK (the
        # cloud's TopicRouter: services register their filters before the bus starts).
        if isinstance(topic_filter, str):
            topic_filter = [topic_filter]
        self._filters: Callable[[], Sequence[str]] = (
            topic_filter if callable(topic_filter) else lambda: list(topic_filter))
        self._receive_maximum = receive_maximum
        self._keepalive_s = keepalive_s
        self._breaker = breaker or CircuitBreaker(fail_max=5, reset_timeout=5,
                                                            name="broker")
        self._connected = threading.Event()
        self._refused = threading.Event()
        self.subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=mqtt.MQTTv5, manual_ack=True)
        # Reconnect fast: a resumed session is how refused messages come back.
        self._client.reconnect_delay_set(1, 10)
        if tls is not None:
            _tls_set(self._client, tls)
        self._client.on_connect = self._on_connect
        # paho leaves Nagle on: a PUBACK followed by a small publish then waits for the
        # broker's delayed ACK, ~40 ms per hop. Commands are latency-bound, so send at once.
        self._client.on_socket_open = _no_delay
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self._receive_maximum
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive_s,
                                   clean_start=False, properties=props)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    # -- IngestBus ---------------------------------------------------------------------------

    def is_connected(self) -> bool:
        return self._connected.is_set()

    def ack(self, message: InboundMessage) -> None:
        if message.qos == 0:
            return
        self._call(lambda: self._client.ack(message.mid, message.qos))

    def publish(self, topic: str, payload: bytes) -> None:
        self._call(lambda: self._client.publish(topic, payload, qos=1).rc)

    def publish_tracked(self, topic: str, payload: bytes) -> PahoPublishHandle:
        """QoS 1 publish whose PUBACK the caller can wait for (``CommandBus``)."""
        if not self._connected.is_set():
            raise BrokerUnavailable("not connected to the broker")
        try:
            info = self._breaker.call(lambda: self._client.publish(topic, payload, qos=1))
        except CircuitOpen as exc:
            raise BrokerUnavailable("broker circuit open") from exc
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            raise BrokerUnavailable(f"broker call failed: {mqtt.error_string(info.rc)}")
        return PahoPublishHandle(info)

    def _call(self, send: Callable[[], MQTTErrorCode]) -> None:
        if not self._connected.is_set():  # a local check: not a failed call to the broker
            raise BrokerUnavailable("not connected to the broker")

        def checked() -> None:
            rc = send()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(f"broker call failed: {mqtt.error_string(rc)}")
        try:
            self._breaker.call(checked)
        except CircuitOpen as exc:
            raise BrokerUnavailable("broker circuit open") from exc

    # -- paho callbacks (network thread: never block here) -----------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, _props: Properties | None) -> None:
        if reason.is_failure:
            log.warning("broker refused connection: %s", reason)
            return
        log.info("connected to %s:%d (session present: %s)", self._host, self._port,
                 flags.session_present)
        self._connected.set()
        client.subscribe([(f, 1) for f in self._filters()])

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int,
                      reasons: list[ReasonCode], _props: Properties | None) -> None:
        if all(not r.is_failure for r in reasons):
            self.subscribed.set()
        else:
            log.error("subscription to %s refused: %s", self._filters(), reasons)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, _props: Properties | None) -> None:
        self._connected.clear()
        self.subscribed.clear()
        log.warning("disconnected from broker: %s", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        accepted = self._sink(InboundMessage(msg.topic, bytes(msg.payload), msg.mid, msg.qos,
                                             bool(msg.dup)))
        if not accepted:
            self._refused.set()

    def redeliver_refused(self) -> None:
        """Drop the connection so paho reconnects and the broker resends every un-acked
        message of the persistent session, including the ones we refused while full."""
        if not self._refused.is_set():
            return
        self._refused.clear()
        sock = self._client.socket()
        log.warning("resuming the MQTT session to get refused messages redelivered")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _tls_set(client: mqtt.Client, tls: MqttTls) -> None:
    try:
        client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                       certfile=str(tls.cert_file) if tls.cert_file else None,
                       keyfile=str(tls.key_file) if tls.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED)
    except OSError as exc:  # ssl.SSLError included: a missing, unreadable or mismatched file
        raise SettingsError("HOMEWATT_MQTT_CA_FILE / CERT_FILE / KEY_FILE",
                            f"cannot load TLS files: {exc}") from exc


def _no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
