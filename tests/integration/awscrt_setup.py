"""A running cloud and an awscrt MQTT 5 client of one thing, the way awsiotsdk's V2 service
clients (``IotJobsClientV2``, ``IotShadowClientV2``) are tested against our services.

Two ways in: plain TCP (any MQTT broker), and mutual TLS through the config
``homewatt-cloud broker-config`` generates, with the thing's own certificate and per-gateway
ACLs, as against AWS IoT Core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from awscrt import mqtt5, mqtt_request_response
from awsiot import mqtt5_client_builder

from cloud_sync.bootstrap import CloudService
from tests.integration.conftest_cloud import cloud_settings, register, started, tls_cloud_settings
from tests.tls_broker import TlsBroker

__all__ = ["AwsSetup", "aws_setup", "request_response_options"]

Builder = Callable[[Callable[..., None], Callable[..., None]], mqtt5.Client]


@dataclass
class AwsSetup:
    cloud: CloudService
    client: mqtt5.Client


def request_response_options() -> mqtt_request_response.ClientOptions:
    return mqtt_request_response.ClientOptions(
        max_request_response_subscriptions=4, max_streaming_subscriptions=2,
        operation_timeout_in_seconds=10)


def aws_setup(request: pytest.FixtureRequest, tmp_path: Path, thing: str,
              plain_broker_fixture: str) -> Iterator[AwsSetup]:
    """``request.param`` is ``"tcp"`` (through ``plain_broker_fixture``) or ``"mutual-tls"``."""
    if request.param == "tcp":
        broker: Any = request.getfixturevalue(plain_broker_fixture)
        settings = cloud_settings(f"sqlite:///{tmp_path / 'cloud.sqlite'}", broker, tmp_path)

        def builder(on_up: Callable[..., None], on_stop: Callable[..., None]) -> mqtt5.Client:
            return mqtt5.Client(mqtt5.ClientOptions(
                host_name="127.0.0.1", port=broker.port,
                connect_options=mqtt5.ConnectPacket(client_id=thing, keep_alive_interval_sec=30),
                on_lifecycle_event_connection_success_fn=on_up,
                on_lifecycle_event_stopped_fn=on_stop))
    else:
        tls: TlsBroker = request.getfixturevalue("tls_broker")
        gateway = tls.identity(thing)
        settings = tls_cloud_settings(tls, tmp_path, f"cloud-{thing}")

        def builder(on_up: Callable[..., None], on_stop: Callable[..., None]) -> mqtt5.Client:
            return mqtt5_client_builder.mtls_from_path(
                endpoint="localhost", port=tls.port, cert_filepath=str(gateway.cert),
                pri_key_filepath=str(gateway.key), ca_filepath=str(gateway.ca),
                client_id=thing, on_lifecycle_connection_success=on_up,
                on_lifecycle_stopped=on_stop)
    register(settings, thing)
    cloud = started(settings)
    try:
        yield from _running(cloud, builder)
    finally:
        cloud.stop()


def _running(cloud: CloudService, builder: Builder) -> Iterator[AwsSetup]:
    connected, stopped = threading.Event(), threading.Event()
    client = builder(lambda _e: connected.set(), lambda _e: stopped.set())
    client.start()
    assert connected.wait(10), "awscrt client did not connect to Mosquitto"
    try:
        yield AwsSetup(cloud, client)
    finally:
        client.stop()
        stopped.wait(5)
