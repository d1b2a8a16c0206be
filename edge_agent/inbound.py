"""Messages from the cloud, each to the feature that owns its topic.

Features (telemetry acks, commands, shadows, jobs) register a topic filter and an async handler
with :class:`InboundRouter` when the agent is built; the uplink subscribes to
:attr:`InboundRouter.filters` at every CONNACK, so the subscriptions always match the handlers.
One inbound task awaits the uplink and calls :meth:`InboundRouter.dispatch` for each message, so a
handler must be quick (queue slow work) and a handler's failure is contained to its message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from paho.mqtt.client import topic_matches_sub

from edge_agent.ports import Message

__all__ = ["InboundHandler", "InboundRouter"]

log = logging.getLogger(__name__)

InboundHandler = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class _Route:
    topic_filter: str
    handler: InboundHandler


class InboundRouter:
    """First registered matching filter wins; an unmatched message is counted and ignored."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self.unrouted = 0

    def add(self, topic_filter: str, handler: InboundHandler) -> None:
        """Subscribe to ``topic_filter`` (QoS 1) and hand its messages to ``handler``.

        Raises ``ValueError`` for a filter registered twice.
        """
        if any(r.topic_filter == topic_filter for r in self._routes):
            raise ValueError(f"topic filter {topic_filter!r} already has a handler")
        self._routes.append(_Route(topic_filter, handler))

    @property
    def filters(self) -> list[str]:
        return [r.topic_filter for r in self._routes]

    async def dispatch(self, message: Message) -> bool:
        """Run the handler of ``message``'s topic; ``False`` when no feature owns it."""
        for route in self._routes:
            if topic_matches_sub(route.topic_filter, message.topic):
                await route.handler(message)
                return True
        self.unrouted += 1
        log.debug("ignoring message on %s (no handler)", message.topic)
        return False
