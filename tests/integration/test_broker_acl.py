"""The generated broker config, through a real Mosquitto: who may publish and read what.

Negatives are observed, not assumed: after each forbidden publish the same client publishes an
allowed message, and Mosquitto delivers one publisher's messages to a subscriber in order, so
once the allowed one has arrived the forbidden one would have arrived before it. For messages of
other publishers the forbidden one is PUBACKed (routed) before the sentinel is even sent.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sync.ca import CertificateAuthority, key_pem, write_private, write_public
from tests.tls_broker import CLAIM_IDENTITY, CLOUD_IDENTITY, MqttProbe, TlsBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

A, B = "gw-A", "gw-B"


@pytest.fixture
def probes(tls_broker: TlsBroker) -> Iterator[dict[str, MqttProbe]]:
    made = {name: MqttProbe.connect(tls_broker, tls_broker.identity(name))
            for name in (CLOUD_IDENTITY, A, B, CLAIM_IDENTITY)}
    yield made
    for probe in made.values():
        probe.close()


def test_gateway_cannot_publish_another_gateways_telemetry(probes: dict[str, MqttProbe]) -> None:
    cloud, gw_a = probes[CLOUD_IDENTITY], probes[A]
    cloud.subscribe("$share/homewatt/hw/+/telemetry")
    gw_a.publish(f"hw/{B}/telemetry", b"forged")
    gw_a.publish(f"hw/{A}/telemetry", b"own")  # allowed: the sentinel
    own = cloud.wait_for(f"hw/{A}/telemetry")
    assert own.payload == b"own"
    assert cloud.topics() == [f"hw/{A}/telemetry"]  # the forged one never arrived


def test_gateway_cannot_read_another_gateways_topics(probes: dict[str, MqttProbe]) -> None:
    cloud, gw_a, gw_b = probes[CLOUD_IDENTITY], probes[A], probes[B]
    # Mosquitto 2.0 grants the SUBACK and filters at delivery: the subscription is inert.
    for topic_filter in (f"$aws/things/{B}/#", f"hw/{B}/#", f"hw/{A}/#"):
        gw_a.subscribe(topic_filter)
    cloud.subscribe(f"$aws/things/{B}/shadow/update")
    gw_b.publish(f"$aws/things/{B}/shadow/update", b'{"state":{"reported":{"on":true}}}')
    cloud.publish(f"$aws/things/{B}/shadow/update/delta", b'{"state":{"on":false}}')
    cloud.publish(f"hw/{B}/commands", b"{}")
    cloud.publish(f"hw/{A}/commands", b"sentinel")
    assert gw_a.wait_for(f"hw/{A}/commands").payload == b"sentinel"
    cloud.wait_for(f"$aws/things/{B}/shadow/update")  # B's publish was real and routable
    assert gw_a.topics() == [f"hw/{A}/commands"]


def test_gateway_uses_its_own_topics_both_ways(probes: dict[str, MqttProbe]) -> None:
    cloud, gw_a = probes[CLOUD_IDENTITY], probes[A]
    gw_a.subscribe(f"$aws/things/{A}/shadow/update/delta")
    cloud.subscribe(f"$aws/things/{A}/shadow/update")
    gw_a.publish(f"$aws/things/{A}/shadow/update", b"reported")
    cloud.publish(f"$aws/things/{A}/shadow/update/delta", b"delta")
    assert cloud.wait_for(f"$aws/things/{A}/shadow/update").payload == b"reported"
    assert gw_a.wait_for(f"$aws/things/{A}/shadow/update/delta").payload == b"delta"


def test_claim_certificate_reaches_only_the_provisioning_topics(
        tls_broker: TlsBroker, probes: dict[str, MqttProbe]) -> None:
    cloud, claim = probes[CLOUD_IDENTITY], probes[CLAIM_IDENTITY]
    cloud.subscribe("hw/#")
    cloud.subscribe("$aws/#")
    claim.subscribe("hw/#")
    claim.subscribe(f"$aws/things/{A}/#")
    claim.subscribe("$aws/certificates/create-from-csr/json/accepted")
    claim.publish(f"hw/{A}/telemetry", b"forged")
    claim.publish(f"$aws/things/{A}/shadow/update", b"forged")
    claim.publish("$aws/certificates/create-from-csr/json", b"{}")  # allowed: the sentinel
    cloud.wait_for("$aws/certificates/create-from-csr/json")
    assert cloud.topics() == ["$aws/certificates/create-from-csr/json"]
    cloud.publish(f"hw/{A}/commands", b"not for claims")
    cloud.publish(f"$aws/things/{A}/shadow/get/accepted", b"not for claims")
    cloud.publish("$aws/certificates/create-from-csr/json/accepted", b"reply")
    claim.wait_for("$aws/certificates/create-from-csr/json/accepted")
    assert claim.topics() == ["$aws/certificates/create-from-csr/json/accepted"]
    # the mechanism: no pattern ACL applies to a username containing '+'
    assert f'dangerous username "{CLAIM_IDENTITY}"' in tls_broker.log()


def _connack(tls_broker: TlsBroker, certfile: Path | None, keyfile: Path | None) -> str:
    """What a paho client with these files gets: 'connected', or the error that stopped it."""
    outcome: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rogue")
    client.tls_set(ca_certs=str(tls_broker.ca_file), certfile=str(certfile) if certfile else None,
                   keyfile=str(keyfile) if keyfile else None, cert_reqs=ssl.CERT_REQUIRED)
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(str(reason))
    try:
        client.connect("127.0.0.1", tls_broker.port)
        # with TLS 1.3 the broker's verdict on our certificate arrives with the first read
        for _ in range(50):
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS or outcome:
                break
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"
    finally:
        client.disconnect()
    return "connected" if outcome == ["Success"] else f"refused: {outcome}"


def test_certificate_from_another_ca_or_none_is_refused(tls_broker: TlsBroker,
                                                         tmp_path: Path) -> None:
    rogue = CertificateAuthority.init(tmp_path / "rogue-ca")
    key, cert = rogue.issue_client(A)
    write_private(tmp_path / "rogue.key", key_pem(key))
    write_public(tmp_path / "rogue.crt", cert.pem.encode())
    genuine = tls_broker.identity(A)
    assert _connack(tls_broker, genuine.cert, genuine.key) == "connected"
    assert _connack(tls_broker, tmp_path / "rogue.crt", tmp_path / "rogue.key") != "connected"
    assert _connack(tls_broker, None, None) != "connected"
