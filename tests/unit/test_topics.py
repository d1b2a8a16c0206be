"""Topic builders stay within AWS IoT Core's limits and parse back to what built them."""

from __future__ import annotations

import pytest

from protocols import InvalidMessage, topics
from protocols.topics import HwTopic, ShadowTopic


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (topics.telemetry("gw-1"), HwTopic("telemetry", "gw-1")),
        (topics.telemetry_ack("gw-1"), HwTopic("telemetry_ack", "gw-1")),
        (topics.status("gw-1"), HwTopic("status", "gw-1")),
        (topics.commands("gw-1"), HwTopic("commands", "gw-1")),
        (topics.commands_ack("gw-1"), HwTopic("commands_ack", "gw-1")),
        (topics.shadow("gw-1", "update", "delta"), ShadowTopic("gw-1", "update", "delta", None)),
        (topics.shadow("gw-1", "get"), ShadowTopic("gw-1", "get", None, None)),
        (
            topics.shadow("gw-1", "update", "documents", name="heatpump"),
            ShadowTopic("gw-1", "update", "documents", "heatpump"),
        ),
    ],
)
def test_built_topics_parse_back(topic: str, expected: object) -> None:
    assert topics.parse(topic) == expected


def test_shadow_topic_matches_aws_layout() -> None:
    assert (
        topics.shadow("t", "update", "accepted", name="n")
        == "$aws/things/t/shadow/name/n/update/accepted"
    )


@pytest.mark.parametrize("bad", ["gw/1", "", "gw 1", "g" * 129, "+", "#"])
def test_bad_gateway_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        topics.telemetry(bad)
    assert caught.value.field == "gateway_id"


@pytest.mark.parametrize(
    "bad",
    [
        "hw/gw/unknown",
        "other/gw/telemetry",
        "$aws/things/t/shadow/put",
        "$aws/things/t/shadow/update/maybe",
        "hw//telemetry",
    ],
)
def test_foreign_topics_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidMessage):
        topics.parse(bad)


def test_shared_subscription_filter() -> None:
    assert topics.shared("homewatt", "hw/+/telemetry") == "$share/homewatt/hw/+/telemetry"


def test_topic_limits_hold_for_longest_names() -> None:
    longest = topics.shadow("t" * 128, "update", "documents", name="n" * 64)
    assert len(longest.encode()) <= topics.MAX_TOPIC_BYTES
