"""The agent's shadow sync over FakeShadowChannel (AWS semantics, in memory) and a FakeActuator,
through the real command pipeline (dedup window, interlocks): a delta runs once however often
it is seen, a 409 makes it look again, invalid or refused desired values are reported and
cleared, and offline changes reconcile with local winning for reported, cloud for desired."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.actuators import FakeActuator
from edge_agent.clock import FakeClock
from edge_agent.commands import CommandService
from edge_agent.config import InterlockSettings, MqttSettings
from edge_agent.dedup import CommandDedupWindow
from edge_agent.errors import EdgeAgentError
from edge_agent.executor import CommandExecutor
from edge_agent.shadow_channel import FakeShadowChannel, ShadowUnavailable
from edge_agent.shadow_local import LocalShadow
from edge_agent.shadow_store import SqliteShadowStore
from edge_agent.shadow_sync import ShadowSync
from edge_agent.telemetry_drain import LimitedPublisher
from edge_agent.uplink import FakeUplink
from protocols.commands import Action, Command, CommandAck, ParamValue

GW = "gw-1"
DEVICE = "boiler"


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Yield to the agent's tasks until ``predicate`` holds (fails after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.001)


class Gateway:
    """One agent's command pipeline and shadow sync on files in ``tmp_path``; the cloud
    (``channel``) and the device (``actuator``) outlive :meth:`crash` and :meth:`boot`."""

    def __init__(self, tmp_path: Path, rules: InterlockSettings | None = None, *,
                 store: type[SqliteShadowStore] = SqliteShadowStore) -> None:
        self.tmp_path = tmp_path
        self.store = store
        self.rules = rules or InterlockSettings()
        self.clock = FakeClock()
        self.channel = FakeShadowChannel(self.clock, thing=GW)
        self.actuator = FakeActuator(DEVICE)
        self.tasks: list[asyncio.Task[None]] = []
        self.local_acks: list[CommandAck] = []

    async def boot(self) -> None:
        window = CommandDedupWindow(self.tmp_path / "commands.sqlite")
        executor = CommandExecutor(GW, window, {DEVICE: self.actuator}, {DEVICE: self.rules})
        publisher = LimitedPublisher(FakeUplink(), MqttSettings(), self.clock)
        self.commands = CommandService(GW, executor, publisher, self.clock)
        await self.commands.start()
        self.sync = ShadowSync(GW, [DEVICE], channel=self.channel, link=self.channel,
                               commands=self.commands,
                               store=self.store(self.tmp_path / "shadow.sqlite"),
                               clock=self.clock, retry_s=3600)
        await self.sync.start()
        self.tasks = [asyncio.create_task(self.commands.run()),
                      asyncio.create_task(self.sync.run())]

    async def crash(self) -> None:
        """The process dies: tasks gone, files left as they are (closed, as the OS would)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.sync.stop()
        await asyncio.to_thread(self.commands.executor.window.close)

    def doc(self) -> dict[str, Any]:
        return self.channel.document(DEVICE).state()

    def reported(self, key: str) -> object:
        return (self.doc().get("reported") or {}).get(key)

    def desired(self) -> dict[str, Any]:
        return dict(self.doc().get("desired") or {})

    def settled(self) -> bool:
        """Desired handled: nothing left in it, and the sync has nothing pending."""
        shadow = self.sync.shadows[DEVICE]
        return not self.desired() and not shadow.report_pending and not shadow.requests

    def on_disk(self) -> LocalShadow | None:
        """The local shadow as the next boot will find it."""
        store = SqliteShadowStore(self.tmp_path / "shadow.sqlite")
        store.open()
        try:
            return store.load().get(DEVICE)
        finally:
            store.close()

    def switch_locally(self, action: Action) -> None:
        """A local integration (Home Assistant) switches the device."""
        now = self.clock.now_ms()
        command = Command(command_id=f"ha-{len(self.local_acks):020d}", gateway_id=GW,
                          device_id=DEVICE, action=action, issued_at=now,
                          expires_at=now + 30_000)

        async def reply(ack: CommandAck) -> None:
            self.local_acks.append(ack)
        assert self.commands.submit_local(command, reply)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(tmp_path)
    gateway.channel.set_connected(True)
    await gateway.boot()
    try:
        yield gateway
    finally:
        await gateway.crash()


async def test_desired_state_is_applied_reported_and_cleared(gw: Gateway) -> None:
    gw.channel.set_desired(DEVICE, {"state": "on"})
    await until(lambda: gw.reported("state") == "on" and gw.settled())
    assert gw.actuator.applied == [(Action.SWITCH_ON, {})]
    last = gw.reported("last_command")
    assert isinstance(last, dict) and last["outcome"] == "executed"
    assert last["id"].startswith("shadow-")
    assert "desired" not in gw.doc()  # cleared, and nothing else was in it


async def test_a_delta_delivered_twice_actuates_once(gw: Gateway) -> None:
    gw.actuator.actions = frozenset(Action)  # a setpoint, too
    gw.channel.set_desired(DEVICE, {"value": 45})
    (delta,) = gw.channel.deltas
    gw.channel.redeliver(delta)  # the broker delivers it again at once...
    await until(lambda: gw.reported("value") == 45.0 and gw.settled())
    gw.channel.redeliver(delta)  # ...and once more after the clear (stale by now)
    gw.channel.set_desired(DEVICE, {"state": "on"})  # something after it, to wait for
    await until(lambda: gw.reported("state") == "on" and gw.settled())
    assert gw.actuator.applied == [(Action.SET_SETPOINT, {"value": 45.0}),
                                   (Action.SWITCH_ON, {})]
    assert gw.commands.counters.executed == 2


class LosingStore(SqliteShadowStore):
    """A store whose writes stop reaching the disk once ``lost`` is set (the power went)."""

    lost = False

    def save(self, shadow: LocalShadow) -> None:
        if self.lost:
            raise EdgeAgentError("disk gone")
        super().save(shadow)


async def test_a_delta_seen_again_after_a_crash_is_not_re_executed(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, store=LosingStore)
    gw.channel.set_connected(True)
    await gw.boot()

    def actuate(action: Action, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
        assert isinstance(gw.sync._store, LosingStore)
        gw.sync._store.lost = True  # the agent dies right after the relay clicked
        return {"state": "on"}

    def no_answer(name: str, state: dict[str, object]) -> None:
        raise ShadowUnavailable("the agent is dead: its report never goes out")
    gw.actuator.handler = actuate
    gw.channel.before_update = no_answer
    gw.channel.set_desired(DEVICE, {"state": "on"})
    await until(lambda: gw.sync.storage_errors > 0 and len(gw.actuator.applied) == 1)
    await gw.crash()
    gw.channel.before_update = None
    assert gw.desired() == {"state": "on"}  # the cloud never heard back
    await gw.boot()  # get finds the same delta; the id taken before the crash dedups it
    try:
        await until(lambda: gw.reported("state") == "on" and gw.settled())
        assert gw.actuator.applied == [(Action.SWITCH_ON, {})]  # once, not twice
        assert gw.commands.counters.deduplicated == 1 and gw.commands.counters.executed == 0
        last = gw.reported("last_command")
        assert isinstance(last, dict) and last["outcome"] == "executed"
    finally:
        await gw.crash()


async def test_a_conflict_gets_again_and_applies_the_new_desired(gw: Gateway) -> None:
    def change_of_mind(name: str, state: dict[str, object]) -> None:
        gw.channel.before_update = None
        gw.channel.set_desired(DEVICE, {"state": "off"})  # lands before the agent's update
    gw.channel.before_update = change_of_mind
    gw.channel.set_desired(DEVICE, {"state": "on"})
    await until(lambda: gw.reported("state") == "off" and gw.settled())
    assert gw.actuator.applied == [(Action.SWITCH_ON, {}), (Action.SWITCH_OFF, {})]
    assert gw.sync.conflicts >= 1


async def test_an_invalid_desired_value_is_reported_and_cleared(gw: Gateway) -> None:
    gw.channel.set_desired(DEVICE, {"state": "maybe"})
    await until(gw.settled)
    last = gw.reported("last_command")
    assert isinstance(last, dict) and last["outcome"] == "rejected"
    assert "desired.state" in last["reason"] and "'maybe'" in last["reason"]
    assert gw.actuator.applied == []
    gw.channel.set_desired(DEVICE, {"colour": "red", "state": "on"})  # one bad, one good key
    await until(lambda: gw.reported("state") == "on" and gw.settled())
    assert gw.actuator.applied == [(Action.SWITCH_ON, {})]


async def test_a_value_the_device_refuses_is_reported_and_cleared_without_a_loop(
        gw: Gateway) -> None:
    gw.channel.set_desired(DEVICE, {"amps": 16})  # a relay has no current limit
    await until(gw.settled)
    last = gw.reported("last_command")
    assert isinstance(last, dict) and last["outcome"] == "rejected"
    assert "does not support" in last["reason"]
    assert gw.actuator.applied == []
    assert len(gw.channel.updates) == 1  # one report + clear, then quiet


async def test_an_interlock_refusal_is_reported_and_cleared(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, InterlockSettings(min_on_s=600))
    gateway.channel.set_connected(True)
    await gateway.boot()
    try:
        gateway.channel.set_desired(DEVICE, {"state": "on"})
        await until(lambda: gateway.reported("state") == "on" and gateway.settled())
        gateway.channel.set_desired(DEVICE, {"state": "off"})  # too soon after on
        await until(gateway.settled)
        last = gateway.reported("last_command")
        assert isinstance(last, dict) and last["outcome"] == "rejected"
        assert gateway.reported("state") == "on"  # the truth, not the wish
        assert gateway.actuator.applied == [(Action.SWITCH_ON, {})]
    finally:
        await gateway.crash()


async def test_reported_changes_made_offline_are_sent_on_reconnect(gw: Gateway) -> None:
    gw.channel.set_desired(DEVICE, {"state": "on"})
    await until(lambda: gw.reported("state") == "on" and gw.settled())
    gw.channel.set_connected(False)
    gw.switch_locally(Action.SWITCH_OFF)  # Home Assistant, while the cloud is away
    await until(lambda: len(gw.local_acks) == 1 and gw.on_disk() == gw.sync.shadows[DEVICE])
    await gw.crash()  # and the agent restarts before it is back
    await gw.boot()
    assert gw.reported("state") == "on"  # the cloud still believes the old state
    gw.channel.set_connected(True)
    await until(lambda: gw.reported("state") == "off" and gw.settled())  # local wins
    last = gw.reported("last_command")
    assert isinstance(last, dict) and last["id"].startswith("ha-")


async def test_desired_set_offline_wins_over_local_reported_on_reconnect(gw: Gateway) -> None:
    gw.channel.set_connected(False)
    gw.switch_locally(Action.SWITCH_OFF)  # the device went off locally...
    await until(lambda: len(gw.local_acks) == 1)
    gw.channel.set_desired(DEVICE, {"state": "on"})  # ...and the app wants it on meanwhile
    gw.channel.set_connected(True)
    await until(lambda: gw.reported("state") == "on" and gw.settled())
    assert gw.actuator.applied == [(Action.SWITCH_OFF, {}), (Action.SWITCH_ON, {})]
    assert gw.commands.counters.executed == 2 and gw.commands.counters.deduplicated == 0


class StallingStore(SqliteShadowStore):
    """A save that waits for :attr:`go` once :attr:`stall` is set: a slow fsync on an SD card."""

    stall = False
    go = threading.Event()

    def save(self, shadow: LocalShadow) -> None:
        if self.stall:
            self.go.wait(10)
        super().save(shadow)


@pytest.fixture
async def stalling(tmp_path: Path) -> AsyncIterator[tuple[Gateway, StallingStore]]:
    """A synced gateway whose shadow saves stall while ``store.stall`` is set, until
    ``store.go``."""
    gw = Gateway(tmp_path, store=StallingStore)
    gw.channel.set_connected(True)
    await gw.boot()
    store = gw.sync._store
    assert isinstance(store, StallingStore)
    store.go = threading.Event()
    try:
        await until(lambda: gw.sync.synced)
        yield gw, store
    finally:
        store.go.set()
        await gw.crash()


async def test_a_reconnect_while_the_sync_is_busy_still_gets_the_desired_set_meanwhile(
        stalling: tuple[Gateway, StallingStore]) -> None:
    gw, store = stalling
    store.stall = True
    gw.switch_locally(Action.SWITCH_OFF)  # its report's save stalls the sync
    await until(lambda: len(gw.local_acks) == 1)
    gw.channel.set_connected(False)  # a whole disconnect and reconnect meanwhile,
    gw.channel.set_desired(DEVICE, {"state": "on"})  # with a desired change the device
    gw.channel.set_connected(True)  # hears of only through a get
    store.stall = False
    store.go.set()
    await until(lambda: gw.reported("state") == "on" and gw.settled())
    assert gw.actuator.applied == [(Action.SWITCH_OFF, {}), (Action.SWITCH_ON, {})]


async def test_unanswered_requests_are_retried_soon_then_backing_off_to_retry_s(
        tmp_path: Path) -> None:
    gateway = Gateway(tmp_path)
    await gateway.boot()
    try:
        sync = gateway.sync
        delays = []
        for failures in (1, 2, 3, 20):
            sync.failures = failures
            delays.append(sync._retry_delay())
        assert 0.8 <= delays[0] <= 1.0  # a get lost to a broker restart is retried in ~1 s
        assert delays[0] < delays[1] < delays[2] <= 4.0
        assert 0.8 * 3600 <= delays[3] <= 3600
        sync.failures = 0  # answered, but 409s ran out: the whole period
        assert sync._retry_delay() == 3600
    finally:
        await gateway.crash()


async def test_an_ack_landing_while_its_delta_is_planned_again_is_not_resubmitted(
        stalling: tuple[Gateway, StallingStore]) -> None:
    """A delta seen again (the persistent session's copy of what ``get`` already returned) is
    planned while its command is in flight; the ack lands while that plan is being saved.
    The plan's command must then be dropped, not sent through the executor a second time."""
    gw, store = stalling
    version = gw.sync.shadows[DEVICE].version or 0
    store.stall = True
    planning = asyncio.create_task(
        gw.sync._apply(DEVICE, {"state": "on"}, {"state": 1}, version))
    await until(lambda: "state" in gw.sync.shadows[DEVICE].requests)
    command_id = gw.sync.shadows[DEVICE].command_id(GW, "state")
    assert command_id is not None
    now = gw.clock.now_ms()
    gw.commands.submit_local(  # the first sighting's command, executed and acked now
        Command(command_id=command_id, gateway_id=GW, device_id=DEVICE,
                action=Action.SWITCH_ON, issued_at=now, expires_at=now + 30_000),
        gw.sync._on_reply)
    await until(lambda: gw.sync.shadows[DEVICE].requests["state"].handled)
    store.stall = False
    store.go.set()
    await planning
    await until(lambda: not gw.sync._inflight and gw.reported("state") == "on"
                and gw.settled())
    assert gw.actuator.applied == [(Action.SWITCH_ON, {})]
    assert (gw.commands.counters.executed, gw.commands.counters.deduplicated) == (1, 0)
