"""Compatibility: AWS's own client, awsiotsdk's ``IotIdentityClientV2`` over an MQTT 5 mTLS
connection (``mqtt5_client_builder.mtls_from_path``), provisions a gateway through Mosquitto
(generated config) and our cloud service; the new certificate then carries the gateway's
telemetry into the cloud's store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from awscrt import mqtt5, mqtt_request_response
from awsiot import V2ServiceException, iotidentity, mqtt5_client_builder
from cryptography.hazmat.primitives.asymmetric import ec

from cloud_sync.bootstrap import CloudService, load_settings
from cloud_sync.ca import CertificateAuthority, key_pem, write_private, write_public
from cloud_sync.db.provisioning_store import SqlProvisioningStore
from cloud_sync.provisioning_rules import claim_code_digest, new_claim_code
from edge_agent.provision import ProvisionError, ProvisionRequest
from edge_agent.provision_channel import AwsIotIdentityChannel
from protocols import TelemetryAck, decode, encode, topics
from tests.integration.conftest_cloud import make_batch, started, wait_until
from tests.integration.conftest_provisioning import NOW, csr_pem, ensure_home
from tests.tls_broker import CLAIM_IDENTITY, CLOUD_IDENTITY, TlsBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TEMPLATE = "homewatt-gateway"


@pytest.fixture
def cloud(tls_broker: TlsBroker, tmp_path: Path) -> Iterator[CloudService]:
    me = tls_broker.identity(CLOUD_IDENTITY)
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'cloud.sqlite'}",
                             mqtt_url=tls_broker.url, mqtt_ca_file=me.ca, mqtt_cert_file=me.cert,
                             mqtt_key_file=me.key, data_dir=tmp_path,
                             ca_dir=tls_broker.ca.directory, client_id="cloud-prov")
    service = started(settings)
    try:
        yield service
    finally:
        service.stop()


class AwsClient:
    """An awscrt MQTT 5 client built the way AWS's samples build one."""

    def __init__(self, broker: TlsBroker, cert: Path, key: Path, client_id: str) -> None:
        self.connected = threading.Event()
        self.stopped = threading.Event()
        self.received: list[mqtt5.PublishPacket] = []
        self._lock = threading.Condition()
        self.client = mqtt5_client_builder.mtls_from_path(
            endpoint="localhost", port=broker.port, cert_filepath=str(cert),
            pri_key_filepath=str(key), ca_filepath=str(broker.ca_file), client_id=client_id,
            on_lifecycle_connection_success=lambda _data: self.connected.set(),
            on_lifecycle_stopped=lambda _data: self.stopped.set(),
            on_publish_received=self._on_publish)
        self.client.start()
        assert self.connected.wait(10), f"{client_id} did not connect"

    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        with self._lock:
            self.received.append(data.publish_packet)
            self._lock.notify_all()

    def wait_for(self, topic: str, timeout: float = 15.0) -> mqtt5.PublishPacket:
        with self._lock:
            found = self._lock.wait_for(
                lambda: next((p for p in self.received if p.topic == topic), None), timeout)
        assert found is not None, f"nothing on {topic}"
        return found

    def identity(self) -> iotidentity.IotIdentityClientV2:
        return iotidentity.IotIdentityClientV2(self.client, mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=2, max_streaming_subscriptions=1,
            operation_timeout_in_seconds=15))

    def close(self) -> None:
        self.client.stop()
        self.stopped.wait(5)


def _claim(cloud: CloudService, home: str = "home-1") -> str:
    code = new_claim_code()
    ensure_home(cloud.engine, home)
    SqlProvisioningStore(cloud.engine, cloud.store.breaker).create_claim(
        home, claim_code_digest(code), expires_at=NOW * 2, now=NOW)
    return code


def _result(future: Future[object]) -> object:
    return future.result(20)


def test_iot_identity_client_provisions_a_gateway_that_then_sends_telemetry(
        tls_broker: TlsBroker, cloud: CloudService, tmp_path: Path) -> None:
    claim_id = tls_broker.identity(CLAIM_IDENTITY)
    device_key = ec.generate_private_key(ec.SECP256R1())
    claimer = AwsClient(tls_broker, claim_id.cert, claim_id.key, "claim-0042")
    try:
        identity = claimer.identity()
        created = _result(identity.create_certificate_from_csr(
            iotidentity.CreateCertificateFromCsrRequest(
                certificate_signing_request=csr_pem(device_key, "gw-0042", _claim(cloud)))))
        assert isinstance(created, iotidentity.CreateCertificateFromCsrResponse)
        assert len(created.certificate_id) == 64 and created.certificate_ownership_token
        registered = _result(identity.register_thing(iotidentity.RegisterThingRequest(
            template_name=TEMPLATE, certificate_ownership_token=created.certificate_ownership_token,
            parameters={"SerialNumber": "0042"})))
        assert isinstance(registered, iotidentity.RegisterThingResponse)
        assert registered.thing_name == "gw-0042"
        # the replayed ownership token is refused, in AWS's error shape
        with pytest.raises(V2ServiceException) as replay:
            _result(identity.register_thing(iotidentity.RegisterThingRequest(
                template_name=TEMPLATE,
                certificate_ownership_token=created.certificate_ownership_token,
                parameters={"SerialNumber": "0042"})))
        error = replay.value.modeled_error
        assert (error.status_code, error.error_code) == (403, "InvalidCertificateOwnershipToken")
        # a malformed request is rejected, not ignored
        with pytest.raises(V2ServiceException) as bad:
            _result(identity.create_certificate_from_csr(
                iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request="junk")))
        assert bad.value.modeled_error.status_code == 400
    finally:
        claimer.close()

    # the gateway connects with its new certificate; the registry knows it, so it is stored
    write_private(tmp_path / "gw.key", key_pem(device_key))
    write_public(tmp_path / "gw.crt", created.certificate_pem.encode())
    gateway = AwsClient(tls_broker, tmp_path / "gw.crt", tmp_path / "gw.key", "gw-0042")
    try:
        _result(gateway.client.subscribe(mqtt5.SubscribePacket(subscriptions=[
            mqtt5.Subscription(topics.telemetry_ack("gw-0042"), mqtt5.QoS.AT_LEAST_ONCE)])))
        _result(gateway.client.publish(mqtt5.PublishPacket(
            topic=topics.telemetry("gw-0042"), qos=mqtt5.QoS.AT_LEAST_ONCE,
            payload=encode(make_batch(1, 3, gw="gw-0042")))))
        ack = decode(TelemetryAck, gateway.wait_for(topics.telemetry_ack("gw-0042")).payload)
        assert [(r.first, r.last) for r in ack.ranges] == [(1, 3)]
        wait_until(lambda: len(cloud.store.latest("gw-0042")) == 1, what="stored reading")
    finally:
        gateway.close()


def test_a_claim_certificate_the_broker_refuses_is_reported(tls_broker: TlsBroker,
                                                            tmp_path: Path) -> None:
    rogue = CertificateAuthority.init(tmp_path / "rogue-ca")
    key, cert = rogue.issue_client(CLAIM_IDENTITY)
    write_private(tmp_path / "rogue.key", key_pem(key))
    write_public(tmp_path / "rogue.crt", cert.pem.encode())
    request = ProvisionRequest(broker_url=f"mqtts://localhost:{tls_broker.port}",
                               claim_cert=tmp_path / "rogue.crt", claim_key=tmp_path / "rogue.key",
                               claim_code="x", serial="1", ca_file=tls_broker.ca_file,
                               timeout_s=20)
    with pytest.raises(ProvisionError, match=r"cannot connect to localhost.*Check --broker"):
        AwsIotIdentityChannel.open(request)
