"""The Home Assistant bridge: discovery, meter states and switches on a local MQTT broker.

Its own MQTT connection (a second :class:`~edge_agent.uplink.PahoUplink`, to the broker Home
Assistant uses, not the cloud's) carries, all retained:

- on every connect, and again when Home Assistant announces itself on
  ``<discovery_prefix>/status``: ``online`` on the availability topic (the connection's last
  will says ``offline``), a discovery config per known meter channel and switch, and the
  last states;
- every ``publish_interval_s``, one JSON state per meter that has new ``good`` readings
  (other qualities never reach Home Assistant: an energy total that is ``suspect`` would
  look like a meter reset to its statistics);
- each switch's state after every command the executor ran on it, from the cloud or from
  Home Assistant.

Switch commands from Home Assistant (``ON``/``OFF`` on ``<actuator>/set``) become ordinary
:class:`~protocols.commands.Command` s submitted to the agent's
:class:`~edge_agent.commands.CommandService`: the same queue, dedup window and interlocks as
the cloud's, never around them. A refused command re-publishes the real state, so Home
Assistant's switch flips back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence

from edge_agent.commands import CommandService
from edge_agent.config import AgentConfig
from edge_agent.errors import EdgeAgentError
from edge_agent.ha_discovery import (
    OFFLINE,
    ONLINE,
    PAYLOAD_OFF,
    PAYLOAD_ON,
    availability_topic,
    command_topic,
    meter_state_topic,
    sensor_config,
    sensor_kind,
    switch_config,
    switch_state_topic,
)
from edge_agent.ports import Clock, Message, Uplink
from protocols.commands import Action, Command, CommandAck
from protocols.models import Quality, Reading

__all__ = ["HomeAssistantBridge", "build_home_assistant"]

log = logging.getLogger(__name__)

COMMAND_TTL_MS = 30_000


class HomeAssistantBridge:
    """See the module docstring. ``meters`` maps meter id -> model; ``switches`` lists the
    switchable actuator ids; ``commands`` is the agent's command service."""

    def __init__(self, uplink: Uplink, *, gateway_id: str, meters: Mapping[str, str],
                 switches: Sequence[str], commands: CommandService, clock: Clock,
                 discovery_prefix: str = "homeassistant", topic_prefix: str = "homewatt",
                 publish_interval_s: float = 10.0, version: str = "") -> None:
        self._uplink = uplink
        self.gateway_id = gateway_id
        self._models = dict(meters)
        self._switches = list(switches)
        self._commands = commands
        self._clock = clock
        self._discovery = discovery_prefix
        self._prefix = topic_prefix
        self._interval = publish_interval_s
        self._version = version
        self._values: dict[str, dict[str, float]] = {}  # meter -> channel -> HA value
        self._announced: set[tuple[str, str]] = set()  # (meter, channel) configs published
        self._configs: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._pending: dict[tuple[str, str], tuple[str, bytes]] = {}  # configs to publish
        self._dirty: set[str] = set()
        self._switch_state: dict[str, str] = {}
        self._switch_changes: dict[str, int] = {}  # acks seen per switch (stale read-backs)
        self._announce = asyncio.Event()
        self.commands_received = 0
        self.invalid_commands = 0

    def will(self) -> Message:
        return Message(availability_topic(self._prefix, self.gateway_id), OFFLINE.encode(),
                       retain=True)

    async def start(self) -> None:
        self._commands.on_ack(self._on_ack)
        await self._uplink.start()

    async def stop(self) -> None:
        await self._uplink.stop(self.will())

    def observe(self, readings: Iterable[Reading]) -> None:
        """Take the latest good values (the agent calls this for every poll; never blocks)."""
        for reading in readings:
            if reading.quality is not Quality.GOOD or reading.value is None:
                continue
            kind = sensor_kind(reading.channel, reading.unit)
            model = self._models.get(reading.meter_id)
            if kind is None or model is None:
                continue
            key = (reading.meter_id, reading.channel)
            if key not in self._announced and key not in self._pending:
                self._pending[key] = sensor_config(
                    discovery_prefix=self._discovery, prefix=self._prefix,
                    gateway=self.gateway_id, meter=reading.meter_id, model=model,
                    channel=reading.channel, kind=kind)
            value = reading.value * kind.scale
            self._values.setdefault(reading.meter_id, {})[reading.channel] = round(value, 6)
            self._dirty.add(reading.meter_id)

    async def run(self) -> None:
        """Announce, publish and take commands until cancelled (supervised by the agent)."""
        await asyncio.gather(self._announcer(), self._publisher(), self._inbound())

    async def _announcer(self) -> None:
        while True:
            await self._uplink.wait_connected()
            await self._announce_all()
            self._announce.clear()
            # Re-announce on reconnect, or when Home Assistant says it (re)started.
            disconnected = asyncio.ensure_future(self._uplink.wait_disconnected())
            birth = asyncio.ensure_future(self._announce.wait())
            try:
                await asyncio.wait({disconnected, birth}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Cancelled, not awaited: awaiting them under suppress(CancelledError) would
                # also swallow a cancel of this task landing meanwhile, and stop() would hang.
                for waiter in (disconnected, birth):
                    waiter.cancel()

    async def _announce_all(self) -> None:
        await self._publish(availability_topic(self._prefix, self.gateway_id), ONLINE)
        for actuator in self._switches:
            topic, payload = switch_config(discovery_prefix=self._discovery,
                                           prefix=self._prefix, gateway=self.gateway_id,
                                           actuator=actuator, version=self._version)
            await self._uplink.publish(Message(topic, payload, retain=True))
            changes = self._switch_changes.get(actuator, 0)
            state = await self._read_back(actuator)
            if self._switch_changes.get(actuator, 0) != changes:
                state = self._switch_state.get(actuator)  # a command ran meanwhile: it wins
            await self._publish_switch(actuator, state)
        for key in self._announced:  # a broker restart may have lost the retained ones
            self._pending.setdefault(key, self._configs[key])
        self._dirty.update(self._values)
        await self._flush()

    async def _publisher(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._uplink.is_connected:
                await self._flush()

    async def _flush(self) -> None:
        """Pending discovery configs first (Home Assistant must know a sensor before its
        state), then the state of every meter with new values."""
        for key, (topic, payload) in sorted(self._pending.items()):
            await self._uplink.publish(Message(topic, payload, retain=True))
            self._configs[key] = (topic, payload)
            self._announced.add(key)
        self._pending.clear()
        dirty, self._dirty = self._dirty, set()
        for meter in sorted(dirty):
            await self._publish(meter_state_topic(self._prefix, self.gateway_id, meter),
                                json.dumps(self._values[meter], sort_keys=True))

    async def _inbound(self) -> None:
        while True:
            message = await self._uplink.receive()
            if message.topic == f"{self._discovery}/status":
                if message.payload.strip().lower() == ONLINE.encode():
                    self._announce.set()
                continue
            await self._command(message)

    async def _command(self, message: Message) -> None:
        actuator = message.topic.split("/")[-2]
        payload = message.payload.decode("utf-8", "replace").strip().upper()
        if actuator not in self._switches or payload not in (PAYLOAD_ON, PAYLOAD_OFF):
            self.invalid_commands += 1
            log.warning("Home Assistant command ignored: %r on %s (switches: %s; ON or OFF)",
                        payload[:20], message.topic, ", ".join(self._switches) or "none")
            return
        self.commands_received += 1
        now = self._clock.now_ms()
        command = Command(command_id=f"ha-{uuid.uuid4().hex[:24]}", gateway_id=self.gateway_id,
                          device_id=actuator, issued_at=now, expires_at=now + COMMAND_TTL_MS,
                          action=Action.SWITCH_ON if payload == PAYLOAD_ON
                          else Action.SWITCH_OFF)
        if not self._commands.submit_local(command, self._on_local_ack):
            log.warning("command queue full: Home Assistant's %s %s refused", payload, actuator)
            await self._publish_switch(actuator, self._switch_state.get(actuator))

    async def _on_local_ack(self, ack: CommandAck) -> None:
        log.info("Home Assistant command %s on %s: %s%s", ack.command_id, ack.device_id,
                 ack.outcome.value, f" ({ack.reason})" if ack.reason else "")

    async def _on_ack(self, ack: CommandAck) -> None:
        """Mirror every switch's state after any command (the real state when refused)."""
        if ack.device_id not in self._switches:
            return
        self._switch_changes[ack.device_id] = self._switch_changes.get(ack.device_id, 0) + 1
        state = ack.result.get("state")
        await self._publish_switch(ack.device_id, state if isinstance(state, str)
                                   else self._switch_state.get(ack.device_id))

    async def _publish_switch(self, actuator: str, state: str | None) -> None:
        if state not in ("on", "off"):
            return
        self._switch_state[actuator] = state
        if self._uplink.is_connected:
            await self._publish(switch_state_topic(self._prefix, self.gateway_id, actuator),
                                PAYLOAD_ON if state == "on" else PAYLOAD_OFF)

    async def _read_back(self, actuator: str) -> str | None:
        device = self._commands.executor.actuators.get(actuator)
        if device is None:
            return self._switch_state.get(actuator)
        try:
            state = (await device.read_back()).get("state")
        except EdgeAgentError as exc:
            log.warning("cannot read %s for Home Assistant: %s", actuator, exc)
            return self._switch_state.get(actuator)
        return state if isinstance(state, str) else None

    async def _publish(self, topic: str, text: str) -> None:
        await self._uplink.publish(Message(topic, text.encode(), retain=True))


def build_home_assistant(config: AgentConfig, commands: CommandService,
                         clock: Clock) -> HomeAssistantBridge:
    """The bridge for ``config.home_assistant`` over its own paho connection."""
    from importlib.metadata import PackageNotFoundError, version

    from edge_agent.config import MqttSettings
    from edge_agent.uplink import PahoUplink

    settings = config.home_assistant
    try:
        agent_version = version("homewatt")
    except PackageNotFoundError:
        agent_version = "unknown"
    switches = [a.id for a in config.actuators if a.kind in ("relay", "modbus_switch")]
    gateway = config.gateway_id

    def will() -> Message:
        return Message(availability_topic(settings.topic_prefix, gateway), OFFLINE.encode(),
                       retain=True)

    uplink = PahoUplink(MqttSettings(url=settings.url, ca_file=settings.ca_file),
                        client_id=f"{gateway}-homeassistant",
                        subscriptions=[command_topic(settings.topic_prefix, gateway, "+"),
                                       f"{settings.discovery_prefix}/status"], will=will)
    bridge = HomeAssistantBridge(
        uplink, gateway_id=config.gateway_id,
        meters={m.id: m.model for m in config.meters}, switches=switches, commands=commands,
        clock=clock, discovery_prefix=settings.discovery_prefix,
        topic_prefix=settings.topic_prefix, publish_interval_s=settings.publish_interval_s,
        version=agent_version)
    return bridge
