"""awsiotsdk's own ``IotShadowClientV2`` (awscrt MQTT 5) drives our shadow service through a real
Mosquitto, over plain TCP and over mutual TLS with the generated broker config and the gateway's
own certificate: get of a missing shadow (404), update, get with its delta, the delta stream,
a version conflict (409), null deletes, named and classic shadows, delete."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from awsiot import ServiceStreamOptions, V2ServiceException, iotshadow

from tests.integration.awscrt_setup import AwsSetup, aws_setup, request_response_options
from tests.integration.jobs_fixtures import jobs_broker

__all__ = ["jobs_broker"]
pytestmark = pytest.mark.integration
THING = "gw-1"
RELAY = "boiler"


@pytest.fixture(params=["tcp", "mutual-tls"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AwsSetup]:
    yield from aws_setup(request, tmp_path, THING, "jobs_broker")


def result(future: Future[Any]) -> Any:
    return future.result(timeout=15)


def rejected(future: Future[Any]) -> iotshadow.V2ErrorResponse:
    with pytest.raises(V2ServiceException) as info:
        future.result(timeout=15)
    assert info.value.modeled_error is not None, info.value.inner_error
    return info.value.modeled_error


def update(client: iotshadow.IotShadowClientV2, *, version: int | None = None,
           **state: Any) -> Future[Any]:
    return client.update_named_shadow(iotshadow.UpdateNamedShadowRequest(
        thing_name=THING, shadow_name=RELAY, version=version,
        state=iotshadow.ShadowState(**state)))


def test_iot_shadow_client_v2_drives_our_shadow_service(setup: AwsSetup) -> None:
    client = iotshadow.IotShadowClientV2(setup.client, request_response_options())
    deltas: queue.Queue[iotshadow.ShadowDeltaUpdatedEvent] = queue.Queue()
    stream = client.create_named_shadow_delta_updated_stream(
        iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=THING,
                                                             shadow_name=RELAY),
        ServiceStreamOptions(incoming_event_listener=deltas.put))
    stream.open()

    missing = rejected(client.get_named_shadow(iotshadow.GetNamedShadowRequest(
        thing_name=THING, shadow_name=RELAY)))
    assert missing.code == 404 and RELAY in missing.message

    first = result(update(client, reported={"state": "off"}))
    assert first.version == 1 and first.state.reported == {"state": "off"}
    assert first.metadata.reported["state"]["timestamp"] > 0
    assert deltas.empty()  # nothing desired yet: no delta

    wanted = result(update(client, desired={"state": "on", "value": 55}))
    assert wanted.version == 2
    delta = deltas.get(timeout=10)
    assert (delta.version, delta.state) == (2, {"state": "on", "value": 55})

    got = result(client.get_named_shadow(iotshadow.GetNamedShadowRequest(
        thing_name=THING, shadow_name=RELAY)))
    assert got.version == 2
    assert got.state.desired == {"state": "on", "value": 55}
    assert got.state.reported == {"state": "off"}
    assert got.state.delta == {"state": "on", "value": 55}

    conflict = rejected(update(client, version=1, reported={"state": "on"}))
    assert conflict.code == 409 and conflict.message == "Version conflict"

    # the device got there: report it and clear what it handled, guarded by the version
    done = result(update(client, version=2, reported={"state": "on", "value": 55},
                         desired=None, desired_is_nullable=True))
    assert done.version == 3
    after = result(client.get_named_shadow(iotshadow.GetNamedShadowRequest(
        thing_name=THING, shadow_name=RELAY)))
    assert after.state.desired is None and after.state.delta is None
    assert after.state.reported == {"state": "on", "value": 55}
    assert deltas.empty()

    classic = result(client.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=THING, state=iotshadow.ShadowState(reported={"agent": "1.0.0"}))))
    assert classic.version == 1  # the classic shadow is a document of its own

    deleted = result(client.delete_named_shadow(iotshadow.DeleteNamedShadowRequest(
        thing_name=THING, shadow_name=RELAY)))
    assert deleted.version == 3
    gone = rejected(client.get_named_shadow(iotshadow.GetNamedShadowRequest(
        thing_name=THING, shadow_name=RELAY)))
    assert gone.code == 404
    del stream  # closed when collected (awscrt has no explicit close)
