"""The running agent: meters → durable buffer → MQTT uplink → cloud ack → buffer delete.

:class:`Agent` wires the adapters (real ones from the config, or injected ones for tests and
the fleet runner; see :mod:`edge_agent.agent_wiring`) and runs supervised tasks on one event
loop:

- the meter poller (APScheduler jobs) appends readings to the buffer and wakes the drain;
- :class:`~edge_agent.telemetry_drain.TelemetryDrain` publishes batches within the in-flight
  window and the rate limit, and re-sends batches the cloud has not confirmed after
  ``ack_timeout_s``;
- the inbound task hands each message to the feature registered for its topic on
  :attr:`Agent.inbound`: ``TelemetryAck`` s make the buffer delete those seqs (idempotently,
  even for seqs not in flight, e.g. a late ack after a restart), and messages on
  ``hw/{gw}/commands`` go to the :class:`~edge_agent.commands.CommandService`;
- the command worker executes commands one at a time (dedup window, interlocks, actuators)
  and publishes each ``CommandAck``; at start-up, commands a crash interrupted are acked
  ``unknown`` with the actuator's read-back before any new command runs;
- the status task publishes the retained ``GatewayStatus`` on every connect and every
  ``status_interval_s``;
- the shadow task (:class:`~edge_agent.shadow_sync.ShadowSync`) applies each actuator's
  desired state through the command worker and reports its actual state; the firmware task
  (when enabled) runs updates over Jobs; the Home Assistant bridge (when enabled).

Every task waits on events (new readings, ack, connection up) or a deadline; nothing polls.
:func:`run` is ``homewatt-agent run``: it returns 0 after SIGTERM/SIGINT, 1 if start-up fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING

from edge_agent.agent_wiring import (
    build_channels,
    build_command_service,
    build_poller,
    build_uplink,
    sqlite_buffer,
    start_shadow_sync,
)
from edge_agent.agent_wiring import clock_sync as build_clock_sync
from edge_agent.backoff import Backoff
from edge_agent.clock import SystemClock
from edge_agent.clock_sync import read_boot_id
from edge_agent.clock_watch import ClockWatch
from edge_agent.commands import CommandService
from edge_agent.config import AgentConfig
from edge_agent.errors import EdgeAgentError
from edge_agent.firmware_runner import FirmwareRunner
from edge_agent.firmware_wiring import build_firmware
from edge_agent.ha_bridge import HomeAssistantBridge, build_home_assistant
from edge_agent.health_server import AgentHealthServer, LivenessWindow, Probe, agent_probe
from edge_agent.inbound import InboundRouter
from edge_agent.metrics import AgentMetrics, AgentSources
from edge_agent.modbus_proxy import ModbusTcpProxy, build_proxies
from edge_agent.ports import (
    Actuator,
    Clock,
    ClockSync,
    JobsChannel,
    Message,
    ModbusRegisterBus,
    Notifier,
    OnReadings,
    Poller,
    TelemetryBuffer,
    Uplink,
)
from edge_agent.sd_notify import notifier_from_env, watchdog_interval_s
from edge_agent.service_watchdog import ServiceWatchdog
from edge_agent.shadow_sync import ShadowSync
from edge_agent.status import offline_status, online_status
from edge_agent.supervise import SLOW_STOP_S, cancel_and_wait, report_slow_stop, supervise
from edge_agent.telemetry_drain import LimitedPublisher, TelemetryDrain
from protocols import topics
from protocols.errors import InvalidMessage
from protocols.models import MeterHealth, Reading, TelemetryAck, decode, encode

if TYPE_CHECKING:
    from gpiozero.pins import Factory

__all__ = ["Agent", "PollerFactory", "run", "supervise"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1
PollerFactory = Callable[[OnReadings], Poller]


class Agent:
    """One gateway's agent, runnable in-process (``homewatt-agent run``, tests, fleet runner).

    Adapters not passed in are built from ``config`` (bootstrap): ``SqliteBuffer`` at
    ``config.buffer_path``, ``PahoUplink`` for ``config.mqtt``, and a ``MeterPoller`` over
    ``PymodbusBus`` es and gpiozero S0 inputs (an S0 meter whose GPIO is unavailable is left
    out with a warning). ``poller`` is a factory given the readings callback.
    Actuators are built from ``config.actuators`` at :meth:`start` (relays on ``pin_factory``,
    gpiozero's default when ``None``; Modbus ones on the shared buses) unless ``actuators``
    is given; the command dedup window lives at ``config.dedup_path``.
    ``notifier`` is systemd's notify socket (READY, a health-gated WATCHDOG every
    ``watchdog_interval_s``, STOPPING; see :mod:`edge_agent.service_watchdog`).
    ``clock_sync`` says when wall time is trusted (default from ``config.clock``); readings
    before that are held and re-stamped (:mod:`edge_agent.clock_watch`).
    Nothing connects before :meth:`start`.
    """

    def __init__(self, config: AgentConfig, *, uplink: Uplink | None = None,
                 buffer: TelemetryBuffer | None = None, clock: Clock | None = None,
                 poller: PollerFactory | None = None,
                 actuators: Mapping[str, Actuator] | None = None,
                 pin_factory: Factory | None = None, notifier: Notifier | None = None,
                 watchdog_interval_s: float | None = None,
                 clock_sync: ClockSync | None = None) -> None:
        self.config = config
        self.gateway_id = config.gateway_id
        self.clock: Clock = clock or SystemClock()
        self.buffer = buffer or sqlite_buffer(config, self.clock)
        # Every feature that listens to the cloud registers here before anything connects; the
        # uplink subscribes to these filters at each CONNACK.
        self.inbound = InboundRouter()
        self.inbound.add(topics.telemetry_ack(config.gateway_id), self._on_telemetry_ack)
        self.inbound.add(topics.commands(config.gateway_id), self._on_command)
        self.uplink = uplink or build_uplink(config, self.clock, lambda: self.inbound.filters)
        self._poller_factory = poller or self._real_poller
        self._publisher = LimitedPublisher(self.uplink, config.mqtt, self.clock)
        self.drain = TelemetryDrain(config.gateway_id, self.buffer, self.uplink,
                                    publisher=self._publisher, settings=config.mqtt,
                                    clock=self.clock)
        self._status_topic = topics.status(config.gateway_id)
        self._poller: Poller | None = None
        self._buses: Mapping[str, ModbusRegisterBus] | None = None
        self._injected_actuators = actuators
        self._pin_factory = pin_factory
        self.commands: CommandService | None = None
        self.home_assistant: HomeAssistantBridge | None = None
        self.modbus_proxies: list[ModbusTcpProxy] = []
        self._s0_closers: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.invalid_acks = 0
        self.storage_errors = 0
        self.metrics = AgentMetrics(config.gateway_id, AgentSources(
            buffer_stats=self.buffer.stats, uplink_connected=lambda: self.uplink.is_connected,
            command_counters=lambda: asdict(self.commands.stats()) if self.commands else None,
            error_counters=lambda: {"storage_errors": self.storage_errors,
                                    "invalid_acks": self.invalid_acks},
            meter_health=self._meter_health, now_ms=self.clock.now_ms))
        self.health_server: AgentHealthServer | None = None
        # /livez and systemd's watchdog judge health by one window: they cannot disagree.
        self.liveness = LivenessWindow(config.liveness_window_s)
        self.watchdog = ServiceWatchdog(notifier, self._probe, self.liveness,
                                        watchdog_interval_s)
        self._watchdog_task: asyncio.Task[None] | None = None
        self.clock_watch = ClockWatch(
            clock_sync or build_clock_sync(config), self.clock, self.buffer, boot_id=read_boot_id(),
            hold_max_s=config.clock.hold_max_s, check_interval_s=config.clock.check_interval_s,
            on_release=lambda released: self.drain.rewind(released.first_seq or 1))
        # Firmware updates over Jobs (its topics join the inbound router before connecting);
        # an update's restart sets exit_requested and the process exits with exit_code.
        self.exit_code = EXIT_OK
        self.exit_requested = asyncio.Event()
        self.firmware: FirmwareRunner | None = None
        # Jobs and shadow channels for the transport (paho ones join the inbound router now).
        actuator_ids = (list(actuators) if actuators is not None
                        else [a.id for a in config.actuators])
        self.channels = build_channels(config, self.uplink, self.inbound, actuator_ids)
        self.jobs: JobsChannel | None = self.channels.jobs
        self.shadow: ShadowSync | None = None

    async def start(self) -> None:
        """Open the buffer, connect (in the background) and start polling and draining.

        Raises ``EdgeAgentError`` if the buffer cannot be opened (e.g. in use by another
        process); the broker being down is not an error (the uplink keeps retrying).
        """
        report = await asyncio.to_thread(self.buffer.open)
        log.info("telemetry buffer open: %s", report)
        await self.clock_watch.check_once()  # before polling: is wall time trusted yet?
        await self.uplink.start()
        self.channels.open()
        self.commands = self._command_service()
        await self.commands.start()
        workers = [("telemetry drain", self.drain.run), ("inbound", self._inbound_loop),
                   ("status", self._status_loop), ("commands", self.commands.run),
                   ("clock", self.clock_watch.run)]
        self.shadow = await start_shadow_sync(self.config, self.channels, self.uplink,
                                              self.commands, self.clock)
        if self.shadow is not None:
            workers.append(("shadow", self.shadow.run))
        if self.config.home_assistant.enabled:
            self.home_assistant = build_home_assistant(self.config, self.commands, self.clock)
            await self.home_assistant.start()
            workers.append(("home assistant", self.home_assistant.run))
        self._poller = self._poller_factory(self.ingest)
        self._poller.start()
        restart = Backoff(1.0, 60.0)
        if self.jobs is not None:
            self.firmware = build_firmware(self.config, self.jobs, self._probe,
                                           self.request_exit)
            workers.append(("firmware", self.firmware.run))
        for name, work in workers:
            self._tasks.append(asyncio.create_task(supervise(name, work, restart), name=name))
        if self.config.health_port:
            await self._start_health_server()
        await self._start_proxies()
        self.watchdog.ready(f"running: {len(self.config.meters)} meters configured")
        self._watchdog_task = asyncio.create_task(self.watchdog.run(), name="watchdog")

    def _meter_health(self) -> dict[str, MeterHealth]:
        return self._poller.health() if self._poller is not None else {}

    async def _start_proxies(self) -> None:
        """Modbus TCP proxies on the shared buses; a taken port is logged, never fatal."""
        for proxy in build_proxies(self.config, self._bus_map()):
            try:
                await proxy.start()
            except OSError as exc:
                log.error("Modbus proxy port %d unavailable: %s", proxy.port, exc)
                continue
            self.modbus_proxies.append(proxy)

    async def _probe(self) -> Probe:
        return await agent_probe(self.buffer.stats, self._tasks, self.uplink.is_connected,
                                 self._meter_health())

    def request_exit(self, code: int) -> None:
        """Stop the process with ``code`` (a firmware update's restart: 75)."""
        self.exit_code = code
        self.exit_requested.set()

    async def _start_health_server(self) -> None:
        """Serve /livez, /readyz, /metrics; a taken port is logged, never fatal."""
        server = AgentHealthServer(self._probe, self.metrics.render,
                                   host=self.config.health_host, port=self.config.health_port,
                                   liveness=self.liveness)
        try:
            await server.start()
        except OSError as exc:
            log.error("health port %s:%d unavailable: %s", self.config.health_host,
                      self.config.health_port, exc)
            return
        self.health_server = server

    async def stop(self) -> None:
        """Stop polling, publish the retained offline status, disconnect, close the buffer."""
        self.watchdog.stopping()
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            await asyncio.gather(self._watchdog_task, return_exceptions=True)
            self._watchdog_task = None
        if self.health_server is not None:
            await self.health_server.stop()
            self.health_server = None
        for proxy in self.modbus_proxies:
            await proxy.stop()
        self.modbus_proxies.clear()
        if self._poller is not None:
            await self._poller.stop()
            self._poller = None
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        farewell = offline_status(self.gateway_id, self.clock.now_ms())
        await self.uplink.stop(Message(self._status_topic, encode(farewell), retain=True))
        if self.home_assistant is not None:
            await self.home_assistant.stop()
            self.home_assistant = None
        await self._close_adapters()

    async def _close_adapters(self) -> None:
        """After the tasks stopped: commands, firmware, buses, S0 inputs, then the buffer."""
        if self.shadow is not None:
            await self.shadow.stop()
        if self.commands is not None:
            await self.commands.stop()
        if self.firmware is not None:
            self.firmware.close()
        for bus in (self._buses or {}).values():
            await bus.close()
        for close in self._s0_closers:
            close()
        await asyncio.to_thread(self.buffer.close)

    async def ingest(self, readings: list[Reading]) -> None:
        """Append readings to the buffer (durably) and wake the drain: the poller's callback.

        A storage failure is logged and counted; it never stops the poller.
        """
        try:
            await asyncio.to_thread(self.buffer.append_seqs, readings,
                                    unsynced=self.clock_watch.stamp())
        except EdgeAgentError as exc:
            self.storage_errors += 1
            log.error("could not buffer %d readings: %s", len(readings), exc)
            return
        self.drain.wake()
        if self.home_assistant is not None:
            self.home_assistant.observe(readings)

    async def publish_status(self) -> None:
        stats = await asyncio.to_thread(self.buffer.stats)
        health = self._poller.health() if self._poller is not None else {}
        status = online_status(self.gateway_id, stats, health, self.clock.now_ms())
        await self._publisher.publish(Message(self._status_topic, encode(status), retain=True))

    async def _status_loop(self) -> None:
        while True:
            await self.uplink.wait_connected()
            await self.publish_status()
            # A disconnect ends the wait early, so the next connect publishes at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.status_interval_s):
                    await self.uplink.wait_disconnected()

    async def _inbound_loop(self) -> None:
        while True:
            await self.inbound.dispatch(await self.uplink.receive())

    async def _on_command(self, message: Message) -> None:
        if self.commands is not None:
            self.commands.submit(message)

    async def _on_telemetry_ack(self, message: Message) -> None:
        try:
            ack = decode(TelemetryAck, message.payload)
        except InvalidMessage as exc:
            self.invalid_acks += 1
            log.warning("invalid telemetry ack ignored (%d so far): %s", self.invalid_acks, exc)
            return
        if ack.gateway_id != self.gateway_id:
            log.warning("telemetry ack for gateway %s ignored", ack.gateway_id)
            return
        await self.drain.apply_ack(ack)

    def _bus_map(self) -> Mapping[str, ModbusRegisterBus]:
        """The configured buses, built once and shared by meters and actuators (one lock per
        bus: RS485 has a single master)."""
        if self._buses is None:
            from edge_agent.modbus_bus import build_buses

            self._buses = build_buses(self.config.buses)
        return self._buses

    def _command_service(self) -> CommandService:
        return build_command_service(
            self.config, actuators=self._injected_actuators, buses=self._bus_map,
            pin_factory=self._pin_factory, publisher=self._publisher, clock=self.clock)

    def _real_poller(self, on_readings: OnReadings) -> Poller:
        poller, closers = build_poller(self.config, self._bus_map(), on_readings, self.clock,
                                       self.metrics.observe_read)
        self._s0_closers.extend(closers)
        return poller


def run(config: AgentConfig) -> int:
    """``homewatt-agent run``: run until SIGTERM/SIGINT, then stop cleanly and return 0.

    Returns 1 if the agent cannot start (buffer in use or unreadable, bad TLS files), 75
    when a firmware update needs the service restarted into the new slot (systemd's
    ``Restart=on-failure`` does that).
    """
    return asyncio.run(_run(config))


async def _run(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = notifier_from_env()
    try:
        agent = Agent(config, notifier=notifier, watchdog_interval_s=watchdog_interval_s())
    except EdgeAgentError as exc:
        log.error("agent cannot start: %s", exc)
        return EXIT_FAILED
    try:
        await agent.start()
    except EdgeAgentError as exc:
        log.error("agent cannot start: %s", exc)
        await agent.stop()
        return EXIT_FAILED
    log.info("agent %s running; SIGTERM or SIGINT stops it", config.gateway_id)
    try:
        waiters = [asyncio.ensure_future(stop.wait()),
                   asyncio.ensure_future(agent.exit_requested.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    finally:
        log.info("agent %s stopping", config.gateway_id)
        reporter = asyncio.ensure_future(report_slow_stop(SLOW_STOP_S))
        try:
            await agent.stop()
        finally:
            reporter.cancel()
    return agent.exit_code
