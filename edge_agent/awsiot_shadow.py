"""``AwsIotShadowChannel``: the :class:`~edge_agent.ports.ShadowChannel` port on awsiotsdk's own
``IotShadowClientV2``, for ``mqtt.transport = "awsiot"``.

It shares the :class:`~edge_agent.awsiot_uplink.AwsIotUplink`'s MQTT 5 client, exactly like
:class:`~edge_agent.awsiot_jobs.AwsIotJobsChannel`: the V2 client subscribes to its reply
topics itself and matches replies by ``clientToken`` (its own correlation token, whatever the
request set), so none of these topics are on the agent's inbound router. One delta stream
(``create_named_shadow_delta_updated_stream``) per actuator's shadow; the request-response
client re-subscribes them after a reconnect. A ``get`` waits (up to the timeout) until its
shadow's delta stream is subscribed, so no delta can fall between the document it returns and
the stream: every change after it arrives as a delta. awsiotsdk completes its futures and calls its
listeners on awscrt's threads: calls are awaited through ``asyncio.wrap_future`` and deltas
are bridged into the event loop. A modeled rejection is ``ShadowRejected`` with AWS's code,
anything else (timeout, disconnected) ``ShadowUnavailable``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from awscrt import mqtt5, mqtt_request_response
from awsiot import ServiceStreamOptions, V2ServiceException, iotshadow

from edge_agent.ports import JsonObject, ShadowDelta, ShadowSnapshot
from edge_agent.shadow_channel import (
    DeltaMailbox,
    ShadowRejected,
    ShadowUnavailable,
    desired_timestamps,
)

__all__ = ["AwsIotShadowChannel", "snapshot_from_sdk"]

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_S = 10.0
T = TypeVar("T")


def _dict(value: object) -> JsonObject:
    return dict(value) if isinstance(value, dict) else {}


def snapshot_from_sdk(reply: iotshadow.GetShadowResponse) -> ShadowSnapshot:
    """The port's snapshot from awsiotsdk's model (``None`` sections become ``{}``)."""
    state = reply.state or iotshadow.ShadowStateWithDelta()
    metadata = reply.metadata or iotshadow.ShadowMetadata()
    return ShadowSnapshot(version=int(reply.version or 0), desired=_dict(state.desired),
                          reported=_dict(state.reported), delta=_dict(state.delta),
                          desired_ts=desired_timestamps(metadata.desired))


class AwsIotShadowChannel:
    """Create it before the MQTT client starts; :meth:`open` (on the event loop, after the
    client started) opens the delta streams."""

    def __init__(self, thing: str, client: mqtt5.Client, names: Iterable[str], *,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.thing = thing
        self.names = sorted(set(names))
        self._timeout_s = timeout_s
        # A get holds one subscription (get/+), an update two (accepted, rejected); the sync
        # makes one request at a time. Streams: one per shadow, or the extra ones fail.
        self._shadow = iotshadow.IotShadowClientV2(client, mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=4,
            max_streaming_subscriptions=max(1, len(self.names)),
            operation_timeout_in_seconds=max(1, int(timeout_s))))
        self._deltas = DeltaMailbox()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: list[Any] = []  # awscrt StreamingOperations: kept alive while we listen
        self._live: dict[str, asyncio.Event] = {}  # per shadow: its delta stream is subscribed

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._live = {name: asyncio.Event() for name in self.names}
        for name in self.names:
            stream = self._shadow.create_named_shadow_delta_updated_stream(
                iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=self.thing,
                                                                     shadow_name=name),
                ServiceStreamOptions(
                    incoming_event_listener=lambda event, n=name: self._on_delta(n, event),
                    subscription_status_listener=lambda event, n=name: self._on_status(n,
                                                                                       event)))
            stream.open()
            self._streams.append(stream)

    # -- ShadowChannel ---------------------------------------------------------------------

    async def get(self, name: str) -> ShadowSnapshot | None:
        live = self._live.get(name)
        if live is not None and not live.is_set():
            try:
                async with asyncio.timeout(self._timeout_s):
                    await live.wait()
            except TimeoutError as exc:
                raise ShadowUnavailable(f"delta stream of shadow {name} not subscribed within "
                                        f"{self._timeout_s:.0f}s") from exc
        try:
            reply = await self._call(self._shadow.get_named_shadow(
                iotshadow.GetNamedShadowRequest(thing_name=self.thing, shadow_name=name)))
        except ShadowRejected as exc:
            if exc.code == 404:
                return None
            raise
        return snapshot_from_sdk(reply)

    async def update(self, name: str, state: JsonObject, *, version: int | None) -> int:
        desired, reported = state.get("desired"), state.get("reported")
        request = iotshadow.UpdateNamedShadowRequest(
            thing_name=self.thing, shadow_name=name, version=version,
            state=iotshadow.ShadowState(desired=desired if isinstance(desired, dict) else None,
                                        reported=reported if isinstance(reported, dict)
                                        else None))
        reply = await self._call(self._shadow.update_named_shadow(request))
        if reply.version is None:
            raise ShadowUnavailable(f"update of shadow {name} accepted without a version")
        return int(reply.version)

    async def next_delta(self) -> ShadowDelta:
        return await self._deltas.get()

    # -- plumbing --------------------------------------------------------------------------

    async def _call(self, future: concurrent.futures.Future[T]) -> T:
        try:
            # asyncio.timeout, not wait_for (which can lose a cancel on Python 3.11)
            async with asyncio.timeout(self._timeout_s + 1):
                return await asyncio.wrap_future(future)
        except TimeoutError as exc:
            raise ShadowUnavailable(f"no shadow reply within {self._timeout_s:.0f}s") from exc
        except V2ServiceException as exc:
            error = exc.modeled_error
            if not isinstance(error, iotshadow.V2ErrorResponse) or error.code is None:
                raise ShadowUnavailable(f"shadow request failed: {exc.inner_error or exc}"
                                        ) from exc
            raise ShadowRejected(int(error.code), str(error.message)) from exc

    def _on_delta(self, name: str, event: iotshadow.ShadowDeltaUpdatedEvent) -> None:
        """awscrt's thread: hand the delta to the event loop."""
        if self._loop is None or event.version is None:
            return
        delta = ShadowDelta(name=name, version=int(event.version), state=_dict(event.state),
                            desired_ts=desired_timestamps(event.metadata))
        try:
            self._loop.call_soon_threadsafe(self._deltas.put, delta)
        except RuntimeError:  # the loop closed under a late callback: nobody is listening
            log.debug("shadow delta after the event loop closed")

    def _on_status(self, name: str, event: mqtt_request_response.SubscriptionStatusEvent) -> None:
        """awscrt's thread: track whether the stream is subscribed (see :meth:`get`)."""
        # awscrt hands over a plain int here, whatever its annotation says
        kind = mqtt_request_response.SubscriptionStatusEventType(int(event.type))
        if kind is kind.SUBSCRIPTION_HALTED:
            log.error("delta stream of shadow %s halted: %s", name, event.error)
        else:
            log.debug("delta stream of shadow %s: %s", name, kind.name)
        live = self._live.get(name)
        if live is None or self._loop is None:
            return
        # halted: it will not come back; gets go ahead (deltas then wait for a reconnect's get)
        action = live.clear if kind is kind.SUBSCRIPTION_LOST else live.set
        try:
            self._loop.call_soon_threadsafe(action)
        except RuntimeError:
            log.debug("shadow stream status after the event loop closed")
