"""The agent's InboundRouter: each cloud message to the one feature that owns its topic."""

from __future__ import annotations

import pytest

from edge_agent.inbound import InboundRouter
from edge_agent.ports import Message


async def test_messages_reach_the_handler_of_their_topic_and_strays_are_counted() -> None:
    router = InboundRouter()
    got: list[tuple[str, str]] = []

    async def acks(m: Message) -> None:
        got.append(("acks", m.topic))

    async def shadow(m: Message) -> None:
        got.append(("shadow", m.topic))
    router.add("hw/gw-1/telemetry/ack", acks)
    router.add("$aws/things/gw-1/shadow/name/+/update/delta", shadow)

    assert await router.dispatch(Message("hw/gw-1/telemetry/ack", b"{}"))
    assert await router.dispatch(Message("$aws/things/gw-1/shadow/name/relay/update/delta", b"{}"))
    assert not await router.dispatch(Message("hw/gw-2/telemetry/ack", b"{}"))

    assert got == [("acks", "hw/gw-1/telemetry/ack"),
                   ("shadow", "$aws/things/gw-1/shadow/name/relay/update/delta")]
    assert router.unrouted == 1
    assert router.filters == ["hw/gw-1/telemetry/ack",
                              "$aws/things/gw-1/shadow/name/+/update/delta"]


def test_a_filter_has_one_handler() -> None:
    router = InboundRouter()

    async def handler(_m: Message) -> None: ...
    router.add("hw/gw-1/commands", handler)
    with pytest.raises(ValueError, match="already has a handler"):
        router.add("hw/gw-1/commands", handler)
