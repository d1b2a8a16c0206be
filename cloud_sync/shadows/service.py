"""``ShadowService``: the AWS IoT Device Shadow MQTT API on our broker, and its REST entry.

Registered on the :class:`~cloud_sync.routing.TopicRouter` for the get/update/delete request
topics of classic and named shadows. paho's thread only queues (:meth:`offer`); one worker
thread answers each request in one database transaction (:class:`SqlShadowStore`), publishes
``/accepted`` or ``/rejected`` (and, for an accepted update, ``update/delta`` when there is one
and ``update/documents``) after the commit, and only then PUBACKs: a crash makes the broker
redeliver, and a redelivered request with the same ``clientToken`` is answered again, not
applied twice.

:meth:`ShadowService.update_desired` is the REST path (``PATCH .../shadow``): same store, same
algorithm, same publications; when the broker is down the new desired state is stored anyway and
the gateway finds it with its next ``get`` after it reconnects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloud_sync.db.shadow_store import Change, Reply, SqlShadowStore
from cloud_sync.db.store import now_ms
from cloud_sync.errors import BrokerUnavailable
from cloud_sync.ports import InboundMessage, ReplyBus
from cloud_sync.routing import TopicRouter
from cloud_sync.worker_thread import MessageWorker
from protocols import shadow, topics
from protocols.errors import InvalidMessage

__all__ = ["SHADOW_FILTERS", "ShadowService", "ShadowStats"]

log = logging.getLogger(__name__)
SHADOW_FILTERS = tuple(f"$aws/things/+/shadow/{named}{op}"
                       for named in ("", "name/+/") for op in ("get", "update", "delete"))


@dataclass
class ShadowStats:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    invalid_topics: int = 0
    overflowed: int = 0
    db_failures: int = 0


class ShadowService(MessageWorker[ShadowStats]):
    thread_name = "shadows"

    def __init__(self, store: SqlShadowStore, bus: ReplyBus, *, queue_size: int = 256,
                 retry_max_s: float = 5.0, now_ms: Callable[[], int] = now_ms) -> None:
        super().__init__(queue_size=queue_size, retry_max_s=retry_max_s)
        self.store = store
        self._bus = bus
        self._now_ms = now_ms
        self.stats = ShadowStats()

    def register(self, router: TopicRouter) -> None:
        for topic_filter in SHADOW_FILTERS:
            router.add(topic_filter, self.offer)

    # -- MQTT ----------------------------------------------------------------------------

    def handle(self, message: InboundMessage) -> None:
        """Answer one request, then PUBACK it. Raises ``StorageUnavailable``."""
        now = self._now_ms()
        try:
            topic = topics.parse(message.topic)
        except InvalidMessage as exc:  # only a subscription mistake routes one here
            self.stats.invalid_topics += 1
            log.warning("not a shadow request topic (%s); dropped", exc)
            self._ack(message)
            return
        if not isinstance(topic, topics.ShadowTopic) or topic.suffix is not None:
            self.stats.invalid_topics += 1
            self._ack(message)
            return
        try:
            replies = self._answer(topic, message.payload, now)
            self.stats.accepted += 1
        except shadow.ShadowError as exc:
            token = shadow.client_token_of(message.payload)
            replies = [(topics.shadow(topic.thing, topic.op, "rejected", topic.name),
                        exc.payload(token, now // 1000))]
            self.stats.rejected += 1
        if self._publish(replies):
            self._ack(message)

    def _answer(self, topic: topics.ShadowTopic, payload: bytes, now: int) -> list[Reply]:
        thing, name, ts = topic.thing, topic.name, now // 1000
        if topic.op == "get":
            request = shadow.parse_get(payload)
            body = shadow.get_payload(self.store.get(thing, name), ts, request.client_token,
                                      thing, name)
            return [(topics.shadow(thing, "get", "accepted", name), body)]
        if topic.op == "delete":
            delete = shadow.parse_delete(payload)

            def decide_delete(doc: shadow.ShadowDocument) -> Change:
                tombstone, reply = shadow.apply_delete(doc, delete, ts, thing, name)
                return Change(tombstone, [(topics.shadow(thing, "delete", "accepted", name),
                                           reply)])
            return self.store.change(thing, name, delete.client_token, now, decide_delete)
        update = shadow.parse_update(payload)
        return self.store.change(thing, name, update.client_token, now,
                                 lambda doc: _update_change(thing, name, doc, update, ts))

    # -- REST ----------------------------------------------------------------------------

    def update_desired(self, thing: str, name: str | None, desired: dict[str, Any] | None,
                       version: int | None = None) -> shadow.ShadowDocument:
        """Merge ``desired`` (``None`` clears it) and publish delta/documents; the new
        document. Raises ``ShadowError`` (409, 413) and ``StorageUnavailable``.

        A desired value the device already reports is not stored (its key is cleared
        instead): it would cause no delta now, and linger to fight a later local change (Home
        Assistant switching the device off would make the cloud switch it back on).
        """
        now = self._now_ms()
        stored: list[shadow.ShadowDocument] = []

        def decide(doc: shadow.ShadowDocument) -> Change:
            request = shadow.UpdateRequest({"desired": _unsatisfied(desired, doc.reported)},
                                           None, version)
            change = _update_change(thing, name, doc, request, now // 1000)
            stored.append(change.document or doc)
            return change
        replies = self.store.change(thing, name, None, now, decide)
        if not self._publish(replies):
            log.warning("shadow %s/%s updated; its delta goes out when the gateway next asks "
                        "(broker unavailable)", thing, name or "(classic)")
        return stored[-1]

    # -- plumbing ------------------------------------------------------------------------

    def _publish(self, replies: list[Reply]) -> bool:
        for topic, payload in replies:
            try:
                self._bus.publish(topic, json.dumps(payload, separators=(",", ":")).encode())
            except BrokerUnavailable as exc:  # un-acked: redelivered, replies resent then
                log.warning("shadow reply to %s not sent (%s)", topic, exc)
                return False
        return True

    def _ack(self, message: InboundMessage) -> None:
        try:
            self._bus.ack(message)
        except BrokerUnavailable as exc:
            log.warning("PUBACK for %s not sent (%s); it will be redelivered", message.topic,
                        exc)


def _update_change(thing: str, name: str | None, doc: shadow.ShadowDocument,
                   request: shadow.UpdateRequest, ts: int) -> Change:
    outcome = shadow.apply_update(doc, request, ts)
    replies: list[Reply] = [(topics.shadow(thing, "update", "accepted", name), outcome.accepted)]
    if outcome.delta is not None:
        replies.append((topics.shadow(thing, "update", "delta", name), outcome.delta))
    replies.append((topics.shadow(thing, "update", "documents", name), outcome.documents))
    return Change(outcome.document, replies)


def _unsatisfied(desired: dict[str, Any] | None, reported: dict[str, Any] | None,
                 ) -> dict[str, Any] | None:
    """``desired`` with each value that ``reported`` already holds turned into a delete."""
    if desired is None or not reported:
        return desired
    return {key: None if value is not None and key in reported
            and shadow.values_equal(value, reported[key]) else value
            for key, value in desired.items()}
