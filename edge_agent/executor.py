"""The command executor: one command in, one :class:`~protocols.commands.CommandAck` out.

The order of checks is the contract (each outcome but a wrong gateway is remembered in the
dedup window, so a redelivery always gets the same answer):

1. addressed to another gateway -> ``rejected`` (not remembered: not ours);
2. id known -> the stored outcome with ``duplicate=True``, nothing executed; a ``started``
   id that never finished -> ``unknown`` with the actuator's read-back, never re-run;
3. ``now >= expires_at`` -> ``expired``, never executed;
4. unknown device -> ``rejected``; device left out at start-up -> ``failed`` with why;
   action the device does not support -> ``rejected``;
5. an interlock refuses it -> ``rejected`` with the interlock's reason;
6. otherwise: ``started`` is committed and fsynced, **then** the actuator is driven, then the
   outcome is committed: ``executed``; ``failed`` when the device refused or errored (it did
   not take effect); ``unknown`` with the read-back when a Modbus write got no answer (it may
   have taken effect).

Commands are handled one at a time by the caller (:mod:`edge_agent.commands`); the executor
itself is not meant for concurrent :meth:`CommandExecutor.handle` calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.config import InterlockSettings
from edge_agent.dedup import CommandDedupWindow, CommandRecord, DecisionKind
from edge_agent.errors import BusError, EdgeAgentError
from edge_agent.interlocks import Interlock, SwitchEvent
from edge_agent.ports import Actuator, ActuatorResult
from observability.tracing import span
from protocols.commands import Command, CommandAck, Outcome

__all__ = ["CommandCounters", "CommandExecutor"]

log = logging.getLogger(__name__)

MAX_REASON = 500
INTERRUPTED_REASON = ("interrupted before its outcome was recorded (agent restart): not "
                      "retried; result is the state read back")


@dataclass
class CommandCounters:
    """What the executor decided since start (for the gateway status)."""

    executed: int = 0
    deduplicated: int = 0
    rejected: int = 0
    expired: int = 0
    failed: int = 0
    unknown: int = 0

    def count(self, outcome: Outcome) -> None:
        name = outcome.value
        setattr(self, name, getattr(self, name) + 1)


@dataclass(frozen=True)
class _Verdict:
    outcome: Outcome
    reason: str | None = None
    result: ActuatorResult | None = None
    switch: SwitchEvent | None = None


class CommandExecutor:
    """Decides and runs commands for one gateway; see the module docstring for the order.

    ``unavailable`` maps configured actuators that could not be built to the reason.
    Blocking SQLite work runs on a worker thread; actuators are awaited.
    """

    def __init__(self, gateway_id: str, window: CommandDedupWindow,
                 actuators: Mapping[str, Actuator],
                 rules: Mapping[str, InterlockSettings] | None = None, *,
                 unavailable: Mapping[str, str] | None = None) -> None:
        self.gateway_id = gateway_id
        self.window = window
        self.actuators = dict(actuators)
        self._rules = dict(rules or {})
        self.unavailable = dict(unavailable or {})
        self.interlocks: dict[str, Interlock] = {}
        self.counters = CommandCounters()

    async def open(self, now_ms: int) -> list[CommandAck]:
        """Open the window, load interlock history, prune, and resolve the commands a crash
        interrupted: returns their ``unknown`` acks (to publish; they are finished now)."""
        await asyncio.to_thread(self.window.open)
        for device_id in self.actuators:
            history = await asyncio.to_thread(self.window.switch_history, device_id)
            rules = self._rules.get(device_id, InterlockSettings())
            self.interlocks[device_id] = Interlock(device_id, rules, history)
        await asyncio.to_thread(self.window.prune, now_ms)
        acks = []
        for record in await asyncio.to_thread(self.window.interrupted):
            log.warning("command %s to %s was interrupted mid-actuation: reporting unknown",
                        record.command_id, record.device_id)
            acks.append(await self._resolve_interrupted(record, now_ms, duplicate=False))
        return acks

    async def close(self) -> None:
        for actuator in self.actuators.values():
            await actuator.close()
        await asyncio.to_thread(self.window.close)

    async def handle(self, command: Command, now_ms: int) -> CommandAck:
        """Decide ``command`` at ``now_ms`` (wall epoch ms) and run it at most once.

        Raises ``EdgeAgentError`` only when the window cannot be read or written; the command
        is then not acked (and not actuated if ``started`` could not be committed), so the
        cloud's redelivery retries it.
        """
        if command.gateway_id != self.gateway_id:
            self.counters.rejected += 1
            return self._ack(command, _Verdict(Outcome.REJECTED, f"addressed to gateway "
                                               f"{command.gateway_id}, this is {self.gateway_id}"),
                             now_ms)
        decision = await asyncio.to_thread(self.window.lookup, command.command_id)
        if decision.record is not None:
            return await self._repeat(decision.kind, decision.record, now_ms)
        refusal = self._refusal(command, now_ms)
        if refusal is not None:
            await asyncio.to_thread(self.window.record, command, refusal.outcome,
                                    reason=refusal.reason, now_ms=now_ms)
            self.counters.count(refusal.outcome)
            log.info("command %s (%s %s) %s: %s", command.command_id, command.action.value,
                     command.device_id, refusal.outcome.value, refusal.reason)
            return self._ack(command, refusal, now_ms)
        return await self._execute(command, now_ms)

    async def _repeat(self, kind: DecisionKind, record: CommandRecord,
                      now_ms: int) -> CommandAck:
        if kind is DecisionKind.INTERRUPTED:
            return await self._resolve_interrupted(record, now_ms, duplicate=True)
        self.counters.deduplicated += 1
        assert record.outcome is not None  # DUPLICATE means finished
        return CommandAck(command_id=record.command_id, gateway_id=self.gateway_id,
                          device_id=record.device_id, outcome=record.outcome, duplicate=True,
                          reason=record.reason, result=record.result,
                          ts=record.decided_ms or now_ms)

    def _refusal(self, command: Command, now_ms: int) -> _Verdict | None:
        if now_ms >= command.expires_at:
            return _Verdict(Outcome.EXPIRED, f"arrived at {now_ms}, expired at "
                                             f"{command.expires_at}: not executed")
        device = command.device_id
        actuator = self.actuators.get(device)
        if actuator is None:
            if device in self.unavailable:
                return _Verdict(Outcome.FAILED, f"device {device} is unavailable: "
                                                f"{self.unavailable[device]}")
            known = ", ".join(sorted(self.actuators)) or "none"
            return _Verdict(Outcome.REJECTED, f"unknown device {device} (known: {known})")
        if command.action not in actuator.actions:
            return _Verdict(Outcome.REJECTED, f"device {device} does not support action "
                                              f"{command.action.value}")
        reason = self.interlocks[device].check(command.action, command.params, now_ms,
                                               command.priority)
        return None if reason is None else _Verdict(Outcome.REJECTED, reason)

    async def _execute(self, command: Command, now_ms: int) -> CommandAck:
        decision = await asyncio.to_thread(self.window.begin, command, now_ms)
        if decision.record is not None:  # recorded meanwhile: never actuate twice
            return await self._repeat(decision.kind, decision.record, now_ms)
        actuator = self.actuators[command.device_id]
        interlock = self.interlocks[command.device_id]
        with span("command.actuate", attributes={"device.id": command.device_id}):
            verdict = await self._actuate(actuator, interlock, command, now_ms)
        switch = None if verdict.switch is None else (command.device_id, verdict.switch)
        await asyncio.to_thread(self.window.finish, command.command_id, verdict.outcome,
                                reason=verdict.reason, result=verdict.result, now_ms=now_ms,
                                switch=switch)
        if verdict.switch is not None:
            interlock.record(verdict.switch)
        self.counters.count(verdict.outcome)
        log.info("command %s (%s %s) %s%s", command.command_id, command.action.value,
                 command.device_id, verdict.outcome.value,
                 f": {verdict.reason}" if verdict.reason else "")
        return self._ack(command, verdict, now_ms)

    async def _actuate(self, actuator: Actuator, interlock: Interlock, command: Command,
                       now_ms: int) -> _Verdict:
        try:
            result = await actuator.apply(command.action, command.params)
        except BusError as exc:
            if exc.exception_code is not None:  # the device refused: nothing changed
                return _Verdict(Outcome.FAILED, str(exc))
            # No answer: the write may have landed. Say so, with what the device shows now.
            result, note = await self._read_back(actuator)
            return _Verdict(Outcome.UNKNOWN, f"{exc}{note}", result,
                            _observed_switch(interlock, result, now_ms))
        except EdgeAgentError as exc:
            return _Verdict(Outcome.FAILED, str(exc))
        return _Verdict(Outcome.EXECUTED, None, result,
                        interlock.switch_for(command.action, now_ms))

    async def _resolve_interrupted(self, record: CommandRecord, now_ms: int, *,
                                   duplicate: bool) -> CommandAck:
        actuator = self.actuators.get(record.device_id)
        result: ActuatorResult = {}
        reason = INTERRUPTED_REASON
        switch = None
        if actuator is None:
            reason += "; the device is no longer configured"
        else:
            result, note = await self._read_back(actuator)
            reason += note
            event = _observed_switch(self.interlocks[record.device_id], result, now_ms)
            if event is not None:
                switch = (record.device_id, event)
                self.interlocks[record.device_id].record(event)
        await asyncio.to_thread(self.window.finish, record.command_id, Outcome.UNKNOWN,
                                reason=reason, result=result, now_ms=now_ms, switch=switch)
        self.counters.unknown += 1
        return CommandAck(command_id=record.command_id, gateway_id=self.gateway_id,
                          device_id=record.device_id, outcome=Outcome.UNKNOWN,
                          duplicate=duplicate, reason=reason[:MAX_REASON], result=result,
                          ts=now_ms)

    @staticmethod
    async def _read_back(actuator: Actuator) -> tuple[ActuatorResult, str]:
        try:
            return await actuator.read_back(), ""
        except EdgeAgentError as exc:
            return {}, f"; read-back failed: {exc}"

    def _ack(self, command: Command, verdict: _Verdict, now_ms: int) -> CommandAck:
        reason = None if verdict.reason is None else verdict.reason[:MAX_REASON]
        return CommandAck(command_id=command.command_id, gateway_id=self.gateway_id,
                          device_id=command.device_id, outcome=verdict.outcome,
                          reason=reason, result=verdict.result or {}, ts=now_ms)


def _observed_switch(interlock: Interlock, result: ActuatorResult,
                     now_ms: int) -> SwitchEvent | None:
    """A switch revealed by a read-back (state differs from the last recorded one)."""
    state = result.get("state")
    if state not in ("on", "off"):
        return None
    on = state == "on"
    return None if interlock.is_on is on else SwitchEvent(now_ms, on)
