"""The agent's command loop: ``hw/{gw}/commands`` in, ``hw/{gw}/commands/ack`` out.

The inbound task hands each message on the commands topic to :meth:`CommandService.submit`,
which decodes it (an invalid payload is counted and logged, first at warning then at debug,
and never stops anything) and queues it. One worker (:meth:`CommandService.run`) takes commands
one at a time, safety-priority first, runs them through the
:class:`~edge_agent.executor.CommandExecutor` and publishes each ack (QoS 1) through the
agent's :class:`~edge_agent.telemetry_drain.LimitedPublisher`.

The queue is bounded; when it is full a command is dropped and counted: the cloud re-publishes
every unacknowledged command until it expires, and the dedup window makes that safe.

Local integrations (Home Assistant's switches) submit through :meth:`CommandService.submit_local`:
the same queue, executor, dedup window and interlocks; their ack goes back to the caller, not to
the cloud. Observers added with :meth:`CommandService.on_ack` see every ack (state mirrors).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge_agent.executor import CommandCounters, CommandExecutor
from edge_agent.ports import Clock, Message
from edge_agent.telemetry_drain import LimitedPublisher
from observability.tracing import current_traceparent, span
from protocols import topics
from protocols.commands import Command, CommandAck, Priority
from protocols.errors import InvalidMessage
from protocols.models import decode, encode

__all__ = ["CommandService", "CommandStats"]

log = logging.getLogger(__name__)

QUEUE_SIZE = 100
AckHandler = Callable[[CommandAck], Awaitable[None]]


@dataclass(frozen=True)
class CommandStats:
    """Counters for the gateway status."""

    executed: int
    deduplicated: int
    rejected: int
    expired: int
    failed: int
    unknown: int
    invalid: int
    dropped: int


class CommandService:
    """Decode, queue, execute and ack commands for one gateway."""

    def __init__(self, gateway_id: str, executor: CommandExecutor, publisher: LimitedPublisher,
                 clock: Clock) -> None:
        self.topic = topics.commands(gateway_id)
        self.ack_topic = topics.commands_ack(gateway_id)
        self.executor = executor
        self._publisher = publisher
        self._clock = clock
        self._queue: asyncio.PriorityQueue[tuple[int, int, Command, AckHandler | None]] = (
            asyncio.PriorityQueue(QUEUE_SIZE))
        self._observers: list[AckHandler] = []
        self._order = itertools.count()
        self.invalid = 0
        self.dropped = 0
        self.acks_published = 0

    @property
    def counters(self) -> CommandCounters:
        return self.executor.counters

    def stats(self) -> CommandStats:
        c = self.executor.counters
        return CommandStats(c.executed, c.deduplicated, c.rejected, c.expired, c.failed,
                            c.unknown, self.invalid, self.dropped)

    async def start(self) -> None:
        """Open the dedup window and ack the commands a crash interrupted (as ``unknown``).

        Raises ``EdgeAgentError`` if the window cannot be opened.
        """
        for ack in await self.executor.open(self._clock.now_ms()):
            await self._publish(ack)

    async def stop(self) -> None:
        await self.executor.close()

    def submit(self, message: Message) -> None:
        """Decode and queue one inbound message on the commands topic; never raises."""
        try:
            command = decode(Command, message.payload)
        except InvalidMessage as exc:
            self.invalid += 1
            level = logging.WARNING if self.invalid == 1 else logging.DEBUG
            log.log(level, "invalid command ignored (%d so far): %s", self.invalid, exc)
            return
        if not self._enqueue(command, None):
            log.warning("command queue full: dropped %s (%d so far); the cloud will resend it",
                        command.command_id, self.dropped)

    def submit_local(self, command: Command, reply: AckHandler) -> bool:
        """Queue a command from a local integration; ``reply`` gets its ack (not the cloud).
        False when the queue is full (counted as dropped; the caller tells its user)."""
        return self._enqueue(command, reply)

    def on_ack(self, observer: AckHandler) -> None:
        """Call ``observer`` with every ack, cloud commands' and local ones', after it is sent."""
        self._observers.append(observer)

    def _enqueue(self, command: Command, reply: AckHandler | None) -> bool:
        rank = 0 if command.priority is Priority.SAFETY else 1
        try:
            self._queue.put_nowait((rank, next(self._order), command, reply))
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    async def run(self) -> None:
        """The worker: one command at a time, forever (supervised by the agent)."""
        while True:
            _, _, command, reply = await self._queue.get()
            await self._handle(command, reply)

    async def _handle(self, command: Command, reply: AckHandler | None = None) -> None:
        """Execute and ack ``command`` inside a span continuing its ``traceparent``; the ack
        carries the ack span's traceparent back so the cloud's status update joins the trace."""
        with span("command.receive", traceparent=command.traceparent,
                  attributes={"command.id": command.command_id,
                              "command.action": command.action.value}):
            ack = await self.executor.handle(command, self._clock.now_ms())
            with span("command.ack", attributes={"command.outcome": ack.outcome.value}):
                traceparent = current_traceparent()
                if traceparent is not None:
                    ack = ack.model_copy(update={"traceparent": traceparent})
                if reply is None:
                    await self._publish(ack)
                else:
                    await reply(ack)
        for observer in self._observers:
            try:
                await observer(ack)
            except Exception:  # a mirror must never stop the command worker
                log.exception("command ack observer failed")

    async def _publish(self, ack: CommandAck) -> None:
        await self._publisher.publish(Message(self.ack_topic, encode(ack)))
        self.acks_published += 1
