"""The cloud's TopicRouter: one MQTT connection, each message to the one service that owns it."""

from __future__ import annotations

import pytest

from cloud_sync.errors import BrokerUnavailable
from cloud_sync.ports import InboundMessage
from cloud_sync.routing import TopicRouter


def _message(topic: str) -> InboundMessage:
    return InboundMessage(topic, b"{}", mid=1, qos=1)


def test_each_message_reaches_the_service_whose_filter_matches() -> None:
    router = TopicRouter()
    seen: dict[str, list[str]] = {"telemetry": [], "shadow": []}
    router.add("hw/+/telemetry", lambda m: seen["telemetry"].append(m.topic) is None)
    router.add("$aws/things/+/shadow/#", lambda m: seen["shadow"].append(m.topic) is None)

    assert router.route(_message("hw/gw-1/telemetry"))
    assert router.route(_message("$aws/things/gw-1/shadow/name/relay/update"))

    assert seen == {"telemetry": ["hw/gw-1/telemetry"],
                    "shadow": ["$aws/things/gw-1/shadow/name/relay/update"]}


def test_a_full_sink_refuses_so_the_broker_redelivers() -> None:
    router = TopicRouter()
    router.add("hw/+/telemetry", lambda _m: False)
    assert router.route(_message("hw/gw-1/telemetry")) is False


def test_replicas_subscribe_through_the_shared_group() -> None:
    router = TopicRouter("homewatt")
    router.add("hw/+/telemetry", lambda _m: True)
    router.add("$aws/things/+/shadow/#", lambda _m: True)
    assert router.filters == ["$share/homewatt/hw/+/telemetry",
                              "$share/homewatt/$aws/things/+/shadow/#"]
    assert TopicRouter().filters == []


def test_a_filter_has_one_owner() -> None:
    router = TopicRouter()
    router.add("hw/+/telemetry", lambda _m: True)
    with pytest.raises(ValueError, match="already routed"):
        router.add("hw/+/telemetry", lambda _m: True)


def test_an_unroutable_message_is_counted_and_acked_not_left_in_flight() -> None:
    router = TopicRouter()
    acked: list[str] = []
    assert router.route(_message("stray/topic")) is False  # no acker yet: left for redelivery
    router.attach_acker(lambda m: acked.append(m.topic))
    assert router.route(_message("stray/topic")) is True
    assert acked == ["stray/topic"]
    assert router.unrouted == 2


def test_an_unroutable_message_stays_unacked_while_the_broker_is_away() -> None:
    router = TopicRouter()

    def down(_m: InboundMessage) -> None:
        raise BrokerUnavailable("not connected")
    router.attach_acker(down)
    assert router.route(_message("stray/topic")) is False
