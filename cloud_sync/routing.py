"""One MQTT connection, many services: ``TopicRouter`` maps topic filters to their sinks.

Every cloud MQTT service (telemetry ingestion, command acks, shadows, provisioning, jobs)
registers the filter it consumes and a non-blocking sink before the bus starts. The bus
subscribes to :attr:`TopicRouter.filters` (the ``$share/<group>/`` form when replicas split the
load) and hands each message to :meth:`TopicRouter.route` on paho's network thread.

A sink must not block: it queues the message and returns ``False`` when its queue is full, so the
message stays un-acked and the broker resends it (see ``IngestBus.redeliver_refused``). A message
no filter matches (only a broker or subscription mistake sends one) cannot be processed by anyone:
it is logged, counted in :attr:`TopicRouter.unrouted` and acked through :meth:`attach_acker`, so
it does not hold a slot of the broker's in-flight window forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from paho.mqtt.client import topic_matches_sub

from cloud_sync.errors import BrokerUnavailable
from cloud_sync.ports import InboundMessage
from protocols import topics

log = logging.getLogger(__name__)

Sink = Callable[[InboundMessage], bool]


@dataclass(frozen=True)
class Route:
    topic_filter: str  # as matched against a message's topic, never the $share form
    sink: Sink


class TopicRouter:
    """Routes by the first registered filter that matches; register before the bus starts."""

    def __init__(self, share_group: str | None = None) -> None:
        self._share_group = share_group
        self._routes: list[Route] = []
        self._ack: Callable[[InboundMessage], None] | None = None
        self.unrouted = 0

    def attach_acker(self, ack: Callable[[InboundMessage], None]) -> None:
        """How to PUBACK a message nobody consumes (the bus is built after the router)."""
        self._ack = ack

    def add(self, topic_filter: str, sink: Sink) -> None:
        """Consume ``topic_filter`` (e.g. ``hw/+/telemetry``) through ``sink``.

        Raises ``ValueError`` for a filter registered twice: two services would both think
        they own its messages.
        """
        if any(r.topic_filter == topic_filter for r in self._routes):
            raise ValueError(f"topic filter {topic_filter!r} is already routed")
        self._routes.append(Route(topic_filter, sink))

    @property
    def filters(self) -> list[str]:
        """What the bus subscribes to: shared subscriptions when replicas split the load."""
        group = self._share_group
        return [topics.shared(group, r.topic_filter) if group else r.topic_filter
                for r in self._routes]

    def route(self, message: InboundMessage) -> bool:
        """Hand ``message`` to its service; ``False`` leaves it un-acked for redelivery."""
        for route in self._routes:
            if topic_matches_sub(route.topic_filter, message.topic):
                return route.sink(message)
        self.unrouted += 1
        log.warning("no service consumes %s (%d unrouted so far); dropped", message.topic,
                    self.unrouted)
        if self._ack is None:
            return False
        try:
            self._ack(message)
        except BrokerUnavailable:
            return False  # resent after the reconnect, and dropped then
        return True
