"""``TopicShadowChannel``: AWS IoT Device Shadow (named shadows) over the agent's MQTT ``Uplink``,
and ``FakeShadowChannel`` beside it.

Requests go out QoS 1 with a fresh ``clientToken``; the ``/accepted`` or ``/rejected`` reply
echoing it resolves the request (replies for other tokens are ignored, as AWS's SDKs do). The
topic filters (wildcards over the shadow name, so five subscriptions whatever the number of
actuators: AWS IoT Core allows 50 per connection) are registered on the agent's
:class:`~edge_agent.inbound.InboundRouter`, so the uplink subscribes to them at every CONNACK.

Deltas land in a :class:`DeltaMailbox`: one slot per shadow, newest version wins. A delta
holds every desired key that still differs from reported, so a newer one supersedes an older
one of the same shadow and nothing queues up behind a slow consumer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from edge_agent.errors import EdgeAgentError
from edge_agent.inbound import InboundRouter
from edge_agent.ports import Clock, JsonObject, Message, ShadowDelta, ShadowSnapshot, Uplink
from edge_agent.token_requests import TokenRequests
from protocols import shadow as aws
from protocols import topics
from protocols.errors import InvalidMessage

__all__ = ["DeltaMailbox", "FakeShadowChannel", "ShadowRejected", "ShadowUnavailable",
           "TopicShadowChannel", "delta_of", "desired_timestamps", "snapshot_of"]

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_S = 10.0


class ShadowUnavailable(EdgeAgentError):
    """No reply within the timeout (offline, broker down): try again on the next connect."""


class ShadowRejected(EdgeAgentError):
    """The shadow service refused; ``code`` is AWS's (400, 404, 409, 413)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _newest_leaf(node: object) -> int | None:
    if isinstance(node, dict):
        ts = node.get("timestamp")
        if isinstance(ts, int) and not isinstance(ts, bool):
            return ts
        leaves = [t for t in (_newest_leaf(v) for v in node.values()) if t is not None]
        return max(leaves, default=None)
    if isinstance(node, list):
        leaves = [t for t in (_newest_leaf(v) for v in node) if t is not None]
        return max(leaves, default=None)
    return None


def desired_timestamps(desired_meta: object) -> dict[str, int]:
    """Top-level desired key -> when it was last set (a nested key: its newest leaf)."""
    if not isinstance(desired_meta, dict):
        return {}
    out = {str(k): _newest_leaf(v) for k, v in desired_meta.items()}
    return {k: v for k, v in out.items() if v is not None}


def _object(value: object, what: str) -> JsonObject:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage(what, "not a JSON object")
    return value


def _version(payload: Mapping[str, Any]) -> int:
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidMessage("version", f"{version!r} is not an integer")
    return version


def snapshot_of(payload: Mapping[str, Any]) -> ShadowSnapshot:
    """A ``ShadowSnapshot`` from a ``/get/accepted`` payload; raises ``InvalidMessage``."""
    state = _object(payload.get("state"), "state")
    metadata = _object(payload.get("metadata"), "metadata")
    return ShadowSnapshot(version=_version(payload),
                          desired=_object(state.get("desired"), "state.desired"),
                          reported=_object(state.get("reported"), "state.reported"),
                          delta=_object(state.get("delta"), "state.delta"),
                          desired_ts=desired_timestamps(metadata.get("desired")))


def delta_of(name: str, payload: Mapping[str, Any]) -> ShadowDelta:
    """A ``ShadowDelta`` from an ``/update/delta`` payload; raises ``InvalidMessage``."""
    return ShadowDelta(name=name, version=_version(payload),
                       state=_object(payload.get("state"), "state"),
                       desired_ts=desired_timestamps(payload.get("metadata")))


class DeltaMailbox:
    """The newest delta per shadow, handed out oldest shadow first (event loop only)."""

    def __init__(self) -> None:
        self._latest: dict[str, ShadowDelta] = {}
        self._ready = asyncio.Event()

    def put(self, delta: ShadowDelta) -> None:
        current = self._latest.get(delta.name)
        if current is not None and current.version > delta.version:
            return  # an older one arriving late: the newer one already covers it
        self._latest[delta.name] = delta
        self._ready.set()

    async def get(self) -> ShadowDelta:
        while not self._latest:
            self._ready.clear()
            await self._ready.wait()
        name = next(iter(self._latest))
        return self._latest.pop(name)


class TopicShadowChannel:
    """``ShadowChannel`` over ``uplink`` for the named shadows ``names`` of ``thing``; call
    :meth:`register` before the uplink connects."""

    def __init__(self, thing: str, uplink: Uplink, names: Iterable[str], *,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.thing = thing
        self.names = frozenset(names)
        self._requests = TokenRequests(uplink, timeout_s)
        self._deltas = DeltaMailbox()
        self.ignored = 0

    def register(self, router: InboundRouter) -> None:
        base = f"$aws/things/{self.thing}/shadow/name/+"
        for tail in ("get/accepted", "get/rejected", "update/accepted", "update/rejected",
                     "update/delta"):
            router.add(f"{base}/{tail}", self.on_message)

    async def get(self, name: str) -> ShadowSnapshot | None:
        try:
            reply = await self._request(name, "get", {})
        except ShadowRejected as exc:
            if exc.code == 404:
                return None
            raise
        try:
            return snapshot_of(reply)
        except InvalidMessage as exc:
            raise ShadowUnavailable(f"unusable get reply for shadow {name}: {exc}") from exc

    async def update(self, name: str, state: JsonObject, *, version: int | None) -> int:
        body: dict[str, Any] = {"state": state}
        if version is not None:
            body["version"] = version
        reply = await self._request(name, "update", body)
        try:
            return _version(reply)
        except InvalidMessage as exc:
            raise ShadowUnavailable(f"update of shadow {name} accepted without a version: "
                                    f"{exc}") from exc

    async def next_delta(self) -> ShadowDelta:
        return await self._deltas.get()

    async def _request(self, name: str, op: topics.ShadowOp,
                       body: dict[str, Any]) -> dict[str, Any]:
        topic = topics.shadow(self.thing, op, name=name)
        try:
            accepted, reply = await self._requests.request(topic, body)
        except TimeoutError as exc:
            raise ShadowUnavailable(f"no reply to {topic} within "
                                    f"{self._requests.timeout_s:.0f}s") from exc
        if not accepted:
            code = reply.get("code")
            raise ShadowRejected(code if isinstance(code, int) else 400,
                                 str(reply.get("message")))
        return reply

    async def on_message(self, message: Message) -> None:
        """A reply or a delta on one of our shadows' topics; anything unusable is counted."""
        try:
            topic = topics.parse(message.topic)
            if not isinstance(topic, topics.ShadowTopic) or topic.name not in self.names:
                return  # another shadow of this thing: not ours to handle
            data = json.loads(message.payload)
            if not isinstance(data, dict):
                raise InvalidMessage("payload", "not a JSON object")
            if topic.suffix == "delta":
                self._deltas.put(delta_of(topic.name, data))
                return
        except (InvalidMessage, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.ignored += 1
            level = logging.WARNING if self.ignored == 1 else logging.DEBUG
            log.log(level, "ignoring shadow message on %s: %s", message.topic, exc)
            return
        self._requests.resolve(topic.suffix == "accepted", data)


UpdateHook = Callable[[str, JsonObject], None]


class FakeShadowChannel:
    """An in-memory shadow service for one thing with AWS's semantics (``protocols.shadow``).

    :meth:`set_desired` is the app's PATCH. While :attr:`connected` is False, calls raise
    ``ShadowUnavailable`` and deltas are not delivered (as with a clean MQTT session: the
    agent's ``get`` on reconnect finds them); :meth:`redeliver` sends one again, as a broker
    may. ``before_update`` runs before each agent update (a test changes desired there to
    provoke a 409, or raises). ``updates`` records every agent update, ``deltas`` every delta
    delivered.
    It also is the sync's ``Connectivity`` (``wait_connected``/``wait_disconnected``).
    """

    def __init__(self, clock: Clock, *, thing: str = "gw") -> None:
        self.thing = thing
        self._clock = clock
        self.documents: dict[str, aws.ShadowDocument] = {}
        self.updates: list[tuple[str, JsonObject, int | None]] = []
        self.gets: list[str] = []
        self.deltas: list[ShadowDelta] = []
        self.before_update: UpdateHook | None = None
        self._deltas = DeltaMailbox()
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()

    # -- connectivity ----------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._up.is_set()

    def set_connected(self, up: bool) -> None:
        (self._up if up else self._down).set()
        (self._down if up else self._up).clear()

    async def wait_connected(self) -> None:
        await self._up.wait()

    async def wait_disconnected(self) -> None:
        await self._down.wait()

    # -- the cloud side --------------------------------------------------------------------

    def set_desired(self, name: str, desired: JsonObject, *, version: int | None = None) -> int:
        """Apply ``{"state": {"desired": desired}}`` as the app would; returns the version."""
        return self._apply(name, {"desired": desired}, version)

    def document(self, name: str) -> aws.ShadowDocument:
        return self.documents.get(name, aws.ShadowDocument())

    def _apply(self, name: str, state: JsonObject, version: int | None) -> int:
        body: dict[str, Any] = {"state": state}
        if version is not None:
            body["version"] = version
        try:
            request = aws.parse_update(json.dumps(body).encode())
            outcome = aws.apply_update(self.document(name), request,
                                       self._clock.now_ms() // 1000)
        except aws.ShadowError as exc:
            raise ShadowRejected(exc.code, exc.message) from exc
        self.documents[name] = outcome.document
        if outcome.delta is not None and self.is_connected:
            self.redeliver(delta_of(name, outcome.delta))
        return outcome.document.version

    def redeliver(self, delta: ShadowDelta) -> None:
        self.deltas.append(delta)
        self._deltas.put(delta)

    # -- ShadowChannel ---------------------------------------------------------------------

    def _check_online(self) -> None:
        if not self.is_connected:
            raise ShadowUnavailable("fake shadow service is offline")

    async def get(self, name: str) -> ShadowSnapshot | None:
        self._check_online()
        self.gets.append(name)
        try:
            payload = aws.get_payload(self.document(name), self._clock.now_ms() // 1000, None,
                                      self.thing, name)
        except aws.ShadowError:
            return None
        return snapshot_of(payload)

    async def update(self, name: str, state: JsonObject, *, version: int | None) -> int:
        self._check_online()
        if self.before_update is not None:
            self.before_update(name, state)
        self.updates.append((name, json.loads(json.dumps(state)), version))
        return self._apply(name, state, version)

    async def next_delta(self) -> ShadowDelta:
        return await self._deltas.get()
