"""``AwsIotUplink``: the agent's :class:`~edge_agent.ports.Uplink` over awsiotsdk's MQTT 5 client,
the way AWS IoT Core expects a device (``mqtt.transport = "awsiot"``).

It behaves like ``PahoUplink``: the client id is the gateway id, and the session is kept across
reconnects (``REJOIN_ALWAYS``, session expiry one hour, AWS IoT Core's default maximum), so acks and
commands published while the gateway was away are queued by the broker. The subscriptions are
renewed on every connection anyway. Every publish is QoS 1 and returns without waiting for the
PUBACK. QoS 1 publishes made while offline are queued by the client and sent on reconnect.
Delivery is judged end to end by the callers, never by PUBACK. Reconnects back off exponentially
with full jitter (``reconnect_min_s`` .. ``reconnect_max_s``).

awscrt calls back on its own threads; like ``PahoUplink`` this bridges every callback into the
event loop with ``call_soon_threadsafe`` (inbound messages into a bounded queue, connection
changes into events). Nothing polls.

One difference from paho: the will (the retained ``offline`` status) is fixed when the client
is built, so its timestamp is the agent's start time, not the last connect's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from awscrt import mqtt5

from edge_agent.awsiot_client import AwsIotError, MtlsEndpoint, build_client, crt_error
from edge_agent.config import MqttSettings
from edge_agent.ports import Message
from edge_agent.uplink import INBOUND_QUEUE_SIZE, UplinkError, parse_broker_url

__all__ = ["AwsIotUplink"]

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 3600
FAREWELL_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
_QOS1 = mqtt5.QoS.AT_LEAST_ONCE


@dataclass
class _Bridge:
    loop: asyncio.AbstractEventLoop
    inbound: asyncio.Queue[Message]
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)


class AwsIotUplink:
    """``Uplink`` over awscrt MQTT 5 with mutual TLS (see the module docstring)."""

    def __init__(self, settings: MqttSettings, *, client_id: str,
                 subscriptions: Sequence[str] | Callable[[], Sequence[str]],
                 will: Callable[[], Message]) -> None:
        """Raises ``UplinkError`` for a non-mqtts URL, missing TLS files or files awscrt cannot
        load."""
        address = parse_broker_url(settings.url)
        if not address.tls or settings.cert_file is None or settings.key_file is None:
            raise UplinkError("mqtt.transport awsiot needs an mqtts:// url, cert_file and key_file")
        self._subscriptions: Callable[[], Sequence[str]] = (
            subscriptions if callable(subscriptions) else lambda: list(subscriptions))
        self._bridge: _Bridge | None = None
        self._stopping = False
        self.connect_attempts = 0
        self.dropped_inbound = 0
        self.publish_failures = 0
        farewell = will()
        endpoint = MtlsEndpoint(address.host, address.port, settings.cert_file,
                                settings.key_file, settings.ca_file)
        try:
            self._client = build_client(
                endpoint, client_id=client_id, keepalive_s=settings.keepalive_s,
                session_expiry_s=SESSION_EXPIRY_S,
                will=mqtt5.PublishPacket(topic=farewell.topic, payload=farewell.payload,
                                         qos=_QOS1, retain=farewell.retain),
                reconnect_min_s=settings.reconnect_min_s,
                reconnect_max_s=settings.reconnect_max_s,
                on_publish_received=self._on_publish,
                on_lifecycle_attempting_connect=self._on_attempt,
                on_lifecycle_connection_success=self._on_success,
                on_lifecycle_connection_failure=self._on_failure,
                on_lifecycle_disconnection=self._on_disconnection,
                on_lifecycle_stopped=self._on_stopped)
        except AwsIotError as exc:
            raise UplinkError(str(exc)) from exc
        self._address = address

    @property
    def is_connected(self) -> bool:
        return self._bridge is not None and self._bridge.connected.is_set()

    @property
    def client(self) -> mqtt5.Client:
        """The MQTT 5 client, for awsiotsdk's service clients (Jobs, Shadow) to share: they
        subscribe to their own reply topics and match replies by ``clientToken``."""
        return self._client

    async def start(self) -> None:
        if self._bridge is not None:
            raise UplinkError("uplink already started")
        self._bridge = _Bridge(asyncio.get_running_loop(), asyncio.Queue(INBOUND_QUEUE_SIZE))
        self._bridge.disconnected.set()
        self._client.start()
        log.info("uplink (awsiot) connecting to %s:%d", self._address.host, self._address.port)

    async def stop(self, farewell: Message | None = None) -> None:
        bridge = self._bridge
        if bridge is None:
            return
        self._stopping = True
        if farewell is not None and self.is_connected:
            try:
                async with asyncio.timeout(FAREWELL_TIMEOUT_S):
                    await asyncio.wrap_future(self._send(farewell))
            except Exception as exc:  # TimeoutError or awscrt's: best effort on the way out
                log.warning("farewell message not published: %s", crt_error(exc))
        # A normal DISCONNECT: the broker discards the will (the farewell said it already).
        self._client.stop(mqtt5.DisconnectPacket())
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await bridge.stopped.wait()
        except TimeoutError:
            log.warning("awsiot client did not report stopping within %.0fs", STOP_TIMEOUT_S)
        bridge.connected.clear()
        bridge.disconnected.set()
        self._bridge = None

    async def wait_connected(self) -> None:
        await self._require_bridge().connected.wait()

    async def wait_disconnected(self) -> None:
        await self._require_bridge().disconnected.wait()

    async def publish(self, message: Message) -> None:
        self._require_bridge()
        if not message.topic or "+" in message.topic or "#" in message.topic:
            raise UplinkError(f"cannot publish to {message.topic!r}: not a topic name")
        try:
            future = self._send(message)
        except Exception as exc:  # awscrt validates synchronously (size, topic limits)
            raise UplinkError(f"publish to {message.topic!r} failed: {crt_error(exc)}") from exc
        future.add_done_callback(lambda done: self._published(message.topic, done))

    async def receive(self) -> Message:
        return await self._require_bridge().inbound.get()

    def _send(self, message: Message) -> concurrent.futures.Future[mqtt5.PublishCompletionData]:
        packet = mqtt5.PublishPacket(topic=message.topic, payload=message.payload, qos=_QOS1,
                                     retain=message.retain)
        future: concurrent.futures.Future[mqtt5.PublishCompletionData] = \
            self._client.publish(packet)
        return future

    def _require_bridge(self) -> _Bridge:
        if self._bridge is None:
            raise UplinkError("uplink not started")
        return self._bridge

    # --- awscrt threads: never touch asyncio objects directly ---------------------------

    def _call_in_loop(self, func: Callable[..., object], *args: object) -> None:
        bridge = self._bridge
        if bridge is None:
            return
        try:
            bridge.loop.call_soon_threadsafe(func, *args)
        except RuntimeError:  # the loop closed under a late callback: nobody is listening
            log.debug("uplink callback after event loop closed")

    def _published(self, topic: str,
                   done: concurrent.futures.Future[mqtt5.PublishCompletionData]) -> None:
        """A publish completed: a failure (offline queue dropped, broker refused) is counted;
        the caller's end-to-end acknowledgement re-sends what matters."""
        problem: str | None = None
        if done.cancelled():
            problem = "cancelled"
        elif done.exception() is not None:
            problem = crt_error(done.exception())  # type: ignore[arg-type]
        else:
            puback = done.result().puback
            code = puback.reason_code if puback is not None else None
            if code is not None and code >= mqtt5.PubackReasonCode.UNSPECIFIED_ERROR:
                problem = f"broker refused it: {code.name}"
        if problem is not None:
            self.publish_failures += 1
            level = logging.WARNING if self.publish_failures == 1 else logging.DEBUG
            log.log(level, "publish to %s failed (%d so far): %s", topic, self.publish_failures,
                    problem)

    def _on_attempt(self, _data: mqtt5.LifecycleAttemptingConnectData) -> None:
        self.connect_attempts += 1

    def _on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        filters = list(self._subscriptions())
        if filters:
            packet = mqtt5.SubscribePacket(subscriptions=[mqtt5.Subscription(f, _QOS1)
                                                          for f in filters])
            self._client.subscribe(packet).add_done_callback(
                lambda done: self._subscribed(filters, done))
        session = bool(data.connack_packet and data.connack_packet.session_present)
        log.info("uplink (awsiot) connected (session present: %s)", session)
        self._call_in_loop(self._mark_connected, True)

    def _subscribed(self, filters: list[str],
                    done: concurrent.futures.Future[mqtt5.SubackPacket]) -> None:
        if done.exception() is not None:
            log.error("subscribing to %s failed: %s", filters, crt_error(done.exception()))  # type: ignore[arg-type]
            return
        refused = [f for f, code in zip(filters, done.result().reason_codes, strict=False)
                   if code >= mqtt5.SubackReasonCode.UNSPECIFIED_ERROR]
        if refused:
            log.error("broker refused the subscriptions %s", refused)

    def _on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        level = logging.WARNING if self.connect_attempts <= 1 else logging.DEBUG
        log.log(level, "uplink (awsiot) connect failed (attempt %d): %s", self.connect_attempts,
                crt_error(data.exception) if data.exception else "refused")

    def _on_disconnection(self, data: mqtt5.LifecycleDisconnectData) -> None:
        self._call_in_loop(self._mark_connected, False)
        if not self._stopping:
            log.warning("uplink (awsiot) disconnected: %s",
                        crt_error(data.exception) if data.exception else "by the broker")

    def _on_stopped(self, _data: mqtt5.LifecycleStoppedData) -> None:
        self._call_in_loop(self._mark_stopped)

    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        packet = data.publish_packet
        payload = packet.payload if isinstance(packet.payload, bytes) else \
            bytes(packet.payload or b"")
        self._call_in_loop(self._deliver, Message(packet.topic, payload, bool(packet.retain)))

    # --- event loop side ------------------------------------------------------------------

    def _mark_connected(self, up: bool) -> None:
        if self._bridge is None:
            return
        (self._bridge.connected if up else self._bridge.disconnected).set()
        (self._bridge.disconnected if up else self._bridge.connected).clear()

    def _mark_stopped(self) -> None:
        if self._bridge is not None:
            self._bridge.stopped.set()

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
