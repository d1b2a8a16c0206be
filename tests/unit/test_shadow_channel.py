"""TopicShadowChannel over a FakeUplink whose handler is a shadow service built on
protocols.shadow: requests matched by clientToken, AWS's rejections as ShadowRejected, deltas
routed by shadow name with the newest one winning, silence as ShadowUnavailable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable
from typing import TypeVar

import pytest

from edge_agent.inbound import InboundRouter
from edge_agent.ports import Message
from edge_agent.shadow_channel import ShadowRejected, ShadowUnavailable, TopicShadowChannel
from edge_agent.uplink import FakeUplink
from protocols import shadow as aws
from protocols import topics

GW = "gw-1"
TS = 1_764_000_000
T = TypeVar("T")


class Service:
    """Just enough of the cloud's shadow service to answer the agent."""

    def __init__(self) -> None:
        self.docs: dict[str, aws.ShadowDocument] = {}
        self.foreign_reply_first = False

    def __call__(self, message: Message) -> Iterable[Message]:
        parsed = topics.parse(message.topic)
        assert isinstance(parsed, topics.ShadowTopic) and parsed.name is not None
        name, op = parsed.name, parsed.op
        doc = self.docs.get(name, aws.ShadowDocument())
        token = aws.client_token_of(message.payload)
        out: list[Message] = []
        if self.foreign_reply_first:
            out.append(self._reply(name, op, "accepted", {"clientToken": "someone-else",
                                                          "version": 999}))
        try:
            if op == "get":
                out.append(self._reply(name, op, "accepted",
                                       aws.get_payload(doc, TS, token, GW, name)))
            else:
                outcome = aws.apply_update(doc, aws.parse_update(message.payload), TS)
                self.docs[name] = outcome.document
                out.append(self._reply(name, op, "accepted", outcome.accepted))
                if outcome.delta is not None:
                    out.append(self._reply(name, "update", "delta", outcome.delta))
        except aws.ShadowError as exc:
            out.append(self._reply(name, op, "rejected", exc.payload(token, TS)))
        return out

    @staticmethod
    def _reply(name: str, op: topics.ShadowOp, suffix: topics.ShadowSuffix,
               body: object) -> Message:
        return Message(topics.shadow(GW, op, suffix, name), json.dumps(body).encode())


class Wired:
    def __init__(self, *, timeout_s: float = 2.0) -> None:
        self.service = Service()
        self.uplink = FakeUplink(self.service)
        self.router = InboundRouter()
        self.channel = TopicShadowChannel(GW, self.uplink, ["boiler", "heater"],
                                          timeout_s=timeout_s)
        self.channel.register(self.router)

    async def pump(self) -> None:
        """Route what the 'broker' delivered (the agent's inbound task does this)."""
        while not self.uplink._inbound.empty():
            await self.router.dispatch(await self.uplink.receive())


async def request(wired: Wired, call: Awaitable[T]) -> T:
    """Run a channel call while routing its replies, as the agent's tasks would."""
    task = asyncio.ensure_future(call)
    while not task.done():
        await asyncio.sleep(0.001)
        await wired.pump()
    return task.result()


async def test_five_wildcard_filters_cover_every_shadow() -> None:
    wired = Wired()
    base = f"$aws/things/{GW}/shadow/name/+"
    assert wired.router.filters == [f"{base}/get/accepted", f"{base}/get/rejected",
                                    f"{base}/update/accepted", f"{base}/update/rejected",
                                    f"{base}/update/delta"]


async def test_a_missing_shadow_is_none_and_an_update_creates_it() -> None:
    wired = Wired()
    await wired.uplink.start()
    assert await request(wired, wired.channel.get("boiler")) is None
    version = await request(wired, wired.channel.update(
        "boiler", {"reported": {"state": "off"}}, version=None))
    assert version == 1
    snapshot = await request(wired, wired.channel.get("boiler"))
    assert snapshot is not None and snapshot.reported == {"state": "off"}


async def test_a_stale_version_is_rejected_with_409_and_a_foreign_reply_is_ignored() -> None:
    wired = Wired()
    await wired.uplink.start()
    await request(wired, wired.channel.update("boiler", {"reported": {"state": "off"}},
                                              version=None))
    wired.service.foreign_reply_first = True  # another client's reply arrives first
    with pytest.raises(ShadowRejected) as conflict:
        await request(wired, wired.channel.update("boiler", {"desired": {"state": None}},
                                                  version=0))
    assert conflict.value.code == 409


async def test_deltas_are_routed_by_name_and_the_newest_per_shadow_wins() -> None:
    wired = Wired()
    await wired.uplink.start()
    for desired in ({"state": "on"}, {"state": "off"}):
        await request(wired, wired.channel.update("boiler", {"desired": desired}, version=None))
    await request(wired, wired.channel.update("heater", {"desired": {"value": 40}},
                                              version=None))
    await wired.router.dispatch(Message(topics.shadow(GW, "update", "delta", "stranger"),
                                        b'{"version": 1, "state": {"state": "on"}}'))
    await wired.router.dispatch(Message(topics.shadow(GW, "update", "delta", "boiler"),
                                        b"not json"))
    first, second = await wired.channel.next_delta(), await wired.channel.next_delta()
    assert (first.name, first.version, first.state) == ("boiler", 2, {"state": "off"})
    assert first.desired_ts == {"state": TS}
    assert (second.name, second.state) == ("heater", {"value": 40})
    assert wired.channel.ignored == 1  # the garbage; the stranger's shadow is simply not ours


async def test_no_answer_is_unavailable() -> None:
    wired = Wired(timeout_s=0.05)
    await wired.uplink.start()
    wired.uplink.set_connected(False)  # the publish goes nowhere
    with pytest.raises(ShadowUnavailable):
        await wired.channel.get("boiler")
