"""The agent's MQTT connection: ``PahoUplink`` (paho-mqtt 2.x) and ``FakeUplink``, the two
adapters of the :class:`~edge_agent.ports.Uplink` port.

``PahoUplink`` runs paho's network thread (``loop_start``) and bridges its callbacks into the
event loop with ``call_soon_threadsafe`` (the aiomqtt pattern): inbound messages land in a
bounded ``asyncio.Queue``, connection changes set ``asyncio.Event`` s. Nothing polls.

Session: MQTT 3.1.1 with ``clean_session=False`` and ``client_id = gateway_id`` (a persistent
session, as AWS IoT Core supports it for 3.1.1), so acks published while the gateway was away
are queued by the broker. The subscriptions are renewed on every CONNACK anyway, in case the
broker lost the session. Every publish is QoS 1. Delivery is *not* judged by PUBACK: callers
keep their own end-to-end acknowledgement (see ``edge_agent.drain``).

Reconnect: paho's own loop reconnects; before each wait we set its delay from a jittered
exponential :class:`~edge_agent.backoff.Backoff` (``reconnect_min_s`` .. ``reconnect_max_s``),
so a fleet that lost its broker together does not reconnect in lockstep, and a dead broker
costs one attempt per backoff period, never a tight loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.backoff import Backoff
from edge_agent.config import MqttSettings
from edge_agent.errors import EdgeAgentError
from edge_agent.ports import Message

__all__ = ["BrokerAddress", "FakeUplink", "PahoUplink", "UplinkError", "parse_broker_url"]

log = logging.getLogger(__name__)

QOS = 1
INBOUND_QUEUE_SIZE = 1000
FAREWELL_TIMEOUT_S = 5.0


class UplinkError(EdgeAgentError):
    """A publish could not even be queued (bad topic, payload too large, client stopped)."""

    def __init__(self, message: str, *, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``, optionally with ``user:pass@``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise UplinkError(f"mqtt.url {url!r}: use mqtt://host:port or mqtts://host:port")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, parts.port or (8883 if tls else 1883), tls,
                         parts.username, parts.password)


@dataclass
class _Bridge:
    """State shared with paho's thread; only ever touched on the event loop thread."""

    loop: asyncio.AbstractEventLoop
    inbound: asyncio.Queue[Message]
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


class PahoUplink:
    """``Uplink`` over paho-mqtt 2.x; see the module docstring for session and reconnect."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        subscriptions: Sequence[str] | Callable[[], Sequence[str]],
        will: Callable[[], Message],
        backoff: Backoff | None = None,
    ) -> None:
        """``will`` is called before every connect attempt, so its payload (a status with a
        timestamp) is fresh; it is published retained by the broker if the agent vanishes."""
        self._address = parse_broker_url(settings.url)
        # A callable is asked at every CONNACK: the agent's features register topic filters on
        # its InboundRouter, and the subscriptions follow them.
        self._subscriptions: Callable[[], Sequence[str]] = (
            subscriptions if callable(subscriptions) else lambda: list(subscriptions))
        self._will = will
        self._backoff = backoff or Backoff(settings.reconnect_min_s,
                                           max(settings.reconnect_max_s, settings.reconnect_min_s))
        self._failures = 0
        self._stopping = False
        self._bridge: _Bridge | None = None
        self.connect_attempts = 0
        self.dropped_inbound = 0
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   clean_session=False, protocol=MQTTProtocolVersion.MQTTv311)
        self._client.max_inflight_messages_set(max(20, settings.max_inflight_batches + 4))
        self._keepalive = settings.keepalive_s
        if self._address.tls:
            self._tls(settings)
        if self._address.username is not None:
            self._client.username_pw_set(self._address.username, self._address.password)
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        # paho leaves Nagle on: a PUBACK followed by a small publish then waits for the
        # broker's delayed ACK, ~40 ms per hop. Commands are latency-bound, so send at once.
        self._client.on_socket_open = _no_delay
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._set_reconnect_delay(self._backoff.delay(1))

    def _tls(self, settings: MqttSettings) -> None:
        try:
            self._client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except OSError as exc:  # ssl.SSLError included: a missing or unreadable file
            raise UplinkError(f"mqtt.ca_file / cert_file / key_file: cannot load TLS "
                              f"material: {exc}") from exc

    @property
    def is_connected(self) -> bool:
        return self._bridge is not None and self._bridge.connected.is_set()

    async def start(self) -> None:
        if self._bridge is not None:
            raise UplinkError("uplink already started")
        self._bridge = _Bridge(asyncio.get_running_loop(), asyncio.Queue(INBOUND_QUEUE_SIZE))
        self._bridge.disconnected.set()
        self._client.connect_async(self._address.host, self._address.port, self._keepalive)
        self._client.loop_start()
        log.info("uplink connecting to %s:%d (tls=%s)", self._address.host, self._address.port,
                 self._address.tls)

    async def stop(self, farewell: Message | None = None) -> None:
        if self._bridge is None:
            return
        self._stopping = True
        if farewell is not None and self.is_connected:
            info = self._client.publish(farewell.topic, farewell.payload, QOS, farewell.retain)
            try:
                await asyncio.to_thread(info.wait_for_publish, FAREWELL_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                log.warning("farewell message not published: %s", exc)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._bridge.connected.clear()
        self._bridge.disconnected.set()
        self._bridge = None

    async def wait_connected(self) -> None:
        await self._require_bridge().connected.wait()

    async def wait_disconnected(self) -> None:
        await self._require_bridge().disconnected.wait()

    async def publish(self, message: Message) -> None:
        self._require_bridge()
        try:
            info = self._client.publish(message.topic, message.payload, QOS, message.retain)
        except ValueError as exc:
            raise UplinkError(f"cannot publish to {message.topic!r}: {exc}") from exc
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise UplinkError(f"publish to {message.topic!r} failed: {mqtt.error_string(info.rc)}",
                              rc=int(info.rc))

    async def receive(self) -> Message:
        return await self._require_bridge().inbound.get()

    def _require_bridge(self) -> _Bridge:
        if self._bridge is None:
            raise UplinkError("uplink not started")
        return self._bridge

    # --- paho thread side: never touch asyncio objects directly -------------------------

    def _call_in_loop(self, func: Callable[..., object], *args: object) -> None:
        bridge = self._bridge
        if bridge is None:
            return
        try:
            bridge.loop.call_soon_threadsafe(func, *args)
        except RuntimeError:  # the loop closed under a late callback: nobody is listening
            log.debug("uplink callback after event loop closed")

    def _set_reconnect_delay(self, delay_s: float) -> None:
        # paho waits min(previous * 2, max_delay), or min_delay after a good connection;
        # pinning both to our jittered delay makes paho wait (at most) that long. paho types
        # the arguments int but does plain float arithmetic on them.
        self._client.reconnect_delay_set(delay_s, delay_s)  # type: ignore[arg-type]

    def _on_pre_connect(self, client: mqtt.Client, userdata: object) -> None:
        self.connect_attempts += 1
        will = self._will()
        client.will_set(will.topic, will.payload, qos=QOS, retain=will.retain)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: object) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return  # paho follows up with on_disconnect, which schedules the retry
        self._failures = 0
        self._set_reconnect_delay(self._backoff.delay(1))
        for topic in self._subscriptions():
            client.subscribe(topic, qos=QOS)
        log.info("uplink connected (session present: %s)", flags.session_present)
        self._call_in_loop(self._mark_connected, True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._failed("connect failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: ReasonCode, properties: object) -> None:
        self._call_in_loop(self._mark_connected, False)
        if not self._stopping:
            self._failed(f"disconnected: {reason}")

    def _failed(self, what: str) -> None:
        self._failures += 1
        delay = self._backoff.delay(self._failures)
        self._set_reconnect_delay(delay)
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "uplink %s; retry %d in %.1fs", what, self._failures, delay)

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        self._call_in_loop(self._deliver, Message(message.topic, bytes(message.payload),
                                                  bool(message.retain)))

    # --- event loop side ------------------------------------------------------------------

    def _mark_connected(self, up: bool) -> None:
        if self._bridge is None:
            return
        if up:
            self._bridge.disconnected.clear()
            self._bridge.connected.set()
        else:
            self._bridge.connected.clear()
            self._bridge.disconnected.set()

    def _deliver(self, message: Message) -> None:
        if self._bridge is None:
            return
        try:
            self._bridge.inbound.put_nowait(message)
        except asyncio.QueueFull:
            # Acks are idempotent and unacked batches are re-sent: a drop costs a resend.
            self.dropped_inbound += 1
            log.warning("inbound queue full: dropped a message on %s (%d so far)",
                        message.topic, self.dropped_inbound)


Handler = Callable[[Message], Iterable[Message] | None]


class FakeUplink:
    """In-memory ``Uplink``: every publish is recorded and passed to ``handler``, whose
    returned messages are delivered as inbound (like httpx's ``MockTransport``).

    Starts connected unless ``connect_on_start=False``; tests flip the connection with
    :meth:`set_connected`. A publish while disconnected is recorded but never reaches the
    handler, as if the broker dropped it.
    """

    def __init__(self, handler: Handler | None = None, *, connect_on_start: bool = True) -> None:
        self.handler = handler
        self.published: list[Message] = []
        self._connect_on_start = connect_on_start
        self._inbound: asyncio.Queue[Message] = asyncio.Queue(INBOUND_QUEUE_SIZE)
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self.stopped = False

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        if self._connect_on_start:
            self.set_connected(True)

    async def stop(self, farewell: Message | None = None) -> None:
        if farewell is not None and self.is_connected:
            self.published.append(farewell)
        self.set_connected(False)
        self.stopped = True

    def set_connected(self, up: bool) -> None:
        (self._connected if up else self._disconnected).set()
        (self._disconnected if up else self._connected).clear()

    def inject(self, message: Message) -> None:
        """Deliver an inbound message as if the broker sent it."""
        self._inbound.put_nowait(message)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_disconnected(self) -> None:
        await self._disconnected.wait()

    async def publish(self, message: Message) -> None:
        self.published.append(message)
        if self.handler is not None and self.is_connected:
            for reply in self.handler(message) or ():
                self.inject(reply)

    async def receive(self) -> Message:
        return await self._inbound.get()


def _no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
