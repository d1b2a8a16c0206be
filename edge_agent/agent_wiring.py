"""The agent's bootstrap: the adapters :class:`~edge_agent.runtime.Agent` builds from its config
when none are injected, and the cloud channels chosen by ``mqtt.transport``.

- ``paho``: Jobs and shadows are request/reply over the agent's own ``Uplink``
  (``UplinkJobsChannel``, ``TopicShadowChannel``), their topics on the inbound router;
- ``awsiot`` (an ``AwsIotUplink``): awsiotsdk's own ``IotJobsClientV2`` and
  ``IotShadowClientV2`` on the uplink's MQTT 5 client. They subscribe to their reply topics
  themselves, so nothing joins the inbound router, and :meth:`CloudChannels.open` opens their
  streams once the client started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_agent.clock_sync import AssumeSynced, LinuxClockSync
from edge_agent.commands import CommandService
from edge_agent.config import AgentConfig
from edge_agent.dedup import CommandDedupWindow
from edge_agent.errors import EdgeAgentError
from edge_agent.executor import CommandExecutor
from edge_agent.inbound import InboundRouter
from edge_agent.jobs_channel import UplinkJobsChannel
from edge_agent.ports import (
    Actuator,
    Clock,
    ClockSync,
    JobsChannel,
    Message,
    ModbusRegisterBus,
    OnReadings,
    Poller,
    ShadowChannel,
    TelemetryBuffer,
    Uplink,
)
from edge_agent.shadow_channel import TopicShadowChannel
from edge_agent.shadow_store import SqliteShadowStore
from edge_agent.shadow_sync import ShadowSync
from edge_agent.status import offline_status
from edge_agent.telemetry_drain import LimitedPublisher
from edge_agent.uplink import PahoUplink
from protocols import topics
from protocols.models import encode

if TYPE_CHECKING:
    from gpiozero.pins import Factory

    from edge_agent.scheduler import ReadObserver

__all__ = ["CloudChannels", "build_channels", "build_command_service", "build_poller",
           "build_uplink", "clock_sync", "shadow_names", "sqlite_buffer", "start_shadow_sync"]

log = logging.getLogger(__name__)


def sqlite_buffer(config: AgentConfig, clock: Clock) -> TelemetryBuffer:
    from edge_agent.buffer import SqliteBuffer

    return SqliteBuffer(config.buffer_path, max_bytes=config.buffer.max_bytes,
                        thin_to_minutes=config.buffer.thin_to_minutes, clock=clock)


def clock_sync(config: AgentConfig) -> ClockSync:
    if config.clock.sync == "kernel":
        return LinuxClockSync(flag_file=config.clock.timesync_flag)
    return AssumeSynced()


def build_uplink(config: AgentConfig, clock: Clock,
                 subscriptions: Callable[[], Sequence[str]]) -> Uplink:
    gateway_id = config.gateway_id

    def will() -> Message:
        status = offline_status(gateway_id, clock.now_ms())
        return Message(topics.status(gateway_id), encode(status), retain=True)

    if config.mqtt.transport == "awsiot":
        from edge_agent.awsiot_uplink import AwsIotUplink

        return AwsIotUplink(config.mqtt, client_id=gateway_id, subscriptions=subscriptions,
                            will=will)
    return PahoUplink(config.mqtt, client_id=gateway_id,
                      subscriptions=subscriptions, will=will)


def build_command_service(config: AgentConfig, *, actuators: Mapping[str, Actuator] | None,
                          buses: Callable[[], Mapping[str, ModbusRegisterBus]],
                          pin_factory: Factory | None, publisher: LimitedPublisher,
                          clock: Clock) -> CommandService:
    """The command pipeline over ``actuators``, or those of ``config.actuators`` (relays on
    ``pin_factory``, Modbus ones on ``buses()``); the dedup window at ``config.dedup_path``."""
    unavailable: dict[str, str] = {}
    if actuators is None:
        from edge_agent.actuators import build_actuators

        actuators, unavailable = build_actuators(config.actuators, buses(),
                                                 pin_factory=pin_factory)
    window = CommandDedupWindow(config.dedup_path, max_ids=config.commands.dedup_max_ids,
                                days=config.commands.dedup_days)
    rules = {a.id: a.interlocks for a in config.actuators}
    executor = CommandExecutor(config.gateway_id, window, dict(actuators), rules,
                               unavailable=unavailable)
    return CommandService(config.gateway_id, executor, publisher, clock)


def build_poller(config: AgentConfig, buses: Mapping[str, ModbusRegisterBus],
                 on_readings: OnReadings, clock: Clock, read_observer: ReadObserver,
                 ) -> tuple[Poller, list[Callable[[], None]]]:
    """The meter poller over ``buses`` and the S0 inputs (an S0 meter whose GPIO is
    unavailable is left out with a warning), and the inputs' close functions."""
    from edge_agent.s0_input import GpiozeroPulseInput
    from edge_agent.scheduler import SyncReadable
    from edge_agent.scheduler import build_poller as scheduler_poller

    s0_inputs: dict[str, SyncReadable] = {}
    closers: list[Callable[[], None]] = []
    for meter in config.meters:
        if meter.model != "s0":
            continue
        try:
            pulse = GpiozeroPulseInput(meter, clock=clock, state_dir=config.data_dir)
        except EdgeAgentError as exc:
            log.warning("S0 meter %s left out: %s", meter.id, exc)
            continue
        s0_inputs[meter.id] = pulse
        closers.append(pulse.close)
    poller = scheduler_poller(config, buses, on_readings, clock, s0_inputs=s0_inputs,
                              read_observer=read_observer)
    return poller, closers


def shadow_names(config: AgentConfig, actuator_ids: Collection[str]) -> list[str]:
    """The actuators that get a named shadow (all when ``shadow.enabled``, except ids AWS
    refuses as shadow names: one warning names them)."""
    if not config.shadow.enabled:
        return []
    names = sorted(i for i in actuator_ids if topics.is_shadow_name(i))
    left_out = sorted(set(actuator_ids) - set(names))
    if left_out:
        log.warning("actuators %s get no shadow: a shadow name allows only A-Z a-z 0-9 : _ - "
                    "(rename them to control them through the shadow)", ", ".join(left_out))
    return names


@dataclass
class CloudChannels:
    """The Jobs and shadow channels for the agent's transport (``None``: feature off)."""

    jobs: JobsChannel | None = None
    shadow: ShadowChannel | None = None
    shadow_names: list[str] = field(default_factory=list)
    _openers: list[Callable[[], None]] = field(default_factory=list)

    def open(self) -> None:
        """After ``uplink.start()``, on the event loop: the SDK channels' streams."""
        for opener in self._openers:
            opener()


def build_channels(config: AgentConfig, uplink: Uplink, inbound: InboundRouter,
                   actuator_ids: Collection[str]) -> CloudChannels:
    """Before anything connects: the paho channels' topics join ``inbound`` here."""
    channels = CloudChannels(shadow_names=shadow_names(config, actuator_ids))
    timeout = config.shadow.request_timeout_s
    gateway = config.gateway_id
    if config.mqtt.transport == "awsiot":
        from edge_agent.awsiot_uplink import AwsIotUplink

        if isinstance(uplink, AwsIotUplink):
            from edge_agent.awsiot_jobs import AwsIotJobsChannel
            from edge_agent.awsiot_shadow import AwsIotShadowChannel

            if config.firmware.enabled:
                jobs = AwsIotJobsChannel(gateway, uplink.client)
                channels.jobs = jobs
                channels._openers.append(jobs.open)
            if channels.shadow_names:
                shadow = AwsIotShadowChannel(gateway, uplink.client, channels.shadow_names,
                                             timeout_s=timeout)
                channels.shadow = shadow
                channels._openers.append(shadow.open)
            return channels
    if config.firmware.enabled:
        uplink_jobs = UplinkJobsChannel(gateway, uplink)
        uplink_jobs.register(inbound)
        channels.jobs = uplink_jobs
    if channels.shadow_names:
        topic_shadow = TopicShadowChannel(gateway, uplink, channels.shadow_names,
                                          timeout_s=timeout)
        topic_shadow.register(inbound)
        channels.shadow = topic_shadow
    return channels


async def start_shadow_sync(config: AgentConfig, channels: CloudChannels, uplink: Uplink,
                            commands: CommandService, clock: Clock) -> ShadowSync | None:
    """The started shadow sync (after ``commands`` started), or ``None``: no shadows, or
    their store is unusable (logged: telemetry and commands go on without them)."""
    if channels.shadow is None:
        return None
    settings = config.shadow
    sync = ShadowSync(config.gateway_id, channels.shadow_names, channel=channels.shadow,
                      link=uplink, commands=commands,
                      store=SqliteShadowStore(config.shadow_path), clock=clock,
                      command_ttl_s=settings.command_ttl_s, retry_s=settings.retry_s)
    try:
        await sync.start()
    except EdgeAgentError as exc:
        log.error("device shadows off: %s", exc)
        return None
    return sync
