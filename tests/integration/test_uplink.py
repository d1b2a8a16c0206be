"""PahoUplink against a real Mosquitto: QoS 1 both ways, reconnect with backoff, LWT, mTLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.config import MqttSettings
from edge_agent.ports import Message
from edge_agent.status import offline_status
from edge_agent.uplink import PahoUplink
from protocols import topics
from protocols.models import (
    GatewayStatus,
    Reading,
    TelemetryAck,
    TelemetryBatch,
    Unit,
    decode,
    encode,
)
from tests.integration.conftest_uplink_cloud import Changes, FakeCloud
from tests.services import Mosquitto, free_port, running_mosquitto, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GW = "gw-uplink"
TS = 1_764_000_000_000


def settings(url: str, **overrides: object) -> MqttSettings:
    base: dict[str, object] = {"url": url, "keepalive_s": 5, "reconnect_min_s": 0.2,
                               "reconnect_max_s": 1.0}
    base.update(overrides)
    return MqttSettings.model_validate(base)


def will() -> Message:
    return Message(topics.status(GW), encode(offline_status(GW, TS)), retain=True)


def batch(first: int, count: int) -> Message:
    readings = [Reading(meter_id="m1", channel="power_w", value=float(s), unit=Unit.WATT,
                        ts=TS + s, seq=s) for s in range(first, first + count)]
    return Message(topics.telemetry(GW),
                   encode(TelemetryBatch(gateway_id=GW, readings=readings)))


@pytest.fixture
async def uplink(mosquitto: Mosquitto) -> AsyncIterator[PahoUplink]:
    link = PahoUplink(settings(mosquitto.url), client_id=GW,
                      subscriptions=[topics.telemetry_ack(GW)], will=will)
    await link.start()
    yield link
    await link.stop()


async def next_ack(link: PahoUplink) -> TelemetryAck:
    message = await asyncio.wait_for(link.receive(), 10)
    assert message.topic == topics.telemetry_ack(GW)
    return decode(TelemetryAck, message.payload)


async def test_batch_published_qos1_is_acked_on_the_subscribed_ack_topic(
        mosquitto: Mosquitto, uplink: PahoUplink) -> None:
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes) as cloud:
        await asyncio.wait_for(uplink.wait_connected(), 10)
        await changes.until(cloud.ready, 10)
        await uplink.publish(batch(1, 50))
        ack = await next_ack(uplink)
    assert [(r.first, r.last) for r in ack.ranges] == [(1, 50)]
    assert cloud.distinct() == set(range(1, 51))


async def test_reconnects_with_backoff_after_broker_outage_and_acks_flow_again(
        mosquitto: Mosquitto, uplink: PahoUplink) -> None:
    await asyncio.wait_for(uplink.wait_connected(), 10)
    attempts_before = uplink.connect_attempts
    mosquitto.kill()
    await asyncio.wait_for(uplink.wait_disconnected(), 15)
    await asyncio.sleep(2.5)  # the outage itself
    attempts_during_outage = uplink.connect_attempts - attempts_before
    mosquitto.start()
    await asyncio.wait_for(uplink.wait_connected(), 10)
    # Backoff 0.2, 0.4, 0.8, 1.0 ... s (jitter only shortens): ~5 attempts in 2.5 s.
    # A tight reconnect loop would make hundreds.
    assert 1 <= attempts_during_outage <= 10
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes) as cloud:
        await changes.until(cloud.ready, 10)
        await uplink.publish(batch(100, 10))
        ack = await next_ack(uplink)
    assert [(r.first, r.last) for r in ack.ranges] == [(100, 109)]


CHILD = """
import asyncio, sys
from edge_agent.config import MqttSettings
from edge_agent.ports import Message
from edge_agent.status import offline_status
from edge_agent.uplink import PahoUplink
from protocols import topics
from protocols.models import GatewayStatus, encode

GW = sys.argv[2]

def will():
    return Message(topics.status(GW), encode(offline_status(GW, 1_764_000_000_000)), retain=True)

async def main():
    link = PahoUplink(MqttSettings(url=sys.argv[1]), client_id=GW, subscriptions=[], will=will)
    await link.start()
    await link.wait_connected()
    online = GatewayStatus(gateway_id=GW, state="online", ts=1_764_000_000_000)
    await link.publish(Message(topics.status(GW), encode(online), retain=True))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_killed_agent_leaves_a_retained_offline_status(mosquitto: Mosquitto) -> None:
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes, watch_status=True) as watcher:
        child = subprocess.Popen([sys.executable, "-c", CHILD, mosquitto.url, GW],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
            assert line.strip() == "ready"

            def states() -> list[str]:
                return [decode(GatewayStatus, p).state for p in watcher.statuses]

            await changes.until(lambda: "online" in states(), 10)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()
        await changes.until(lambda: states()[-1:] == ["offline"], 10)
    # A subscriber arriving later finds the offline status retained.
    late = Changes()
    with FakeCloud(mosquitto.port, GW, late, watch_status=True) as newcomer:
        await late.until(lambda: bool(newcomer.statuses), 10)
        status = decode(GatewayStatus, newcomer.statuses[0])
    assert status.state == "offline"
    assert status.gateway_id == GW


# --- mutual TLS --------------------------------------------------------------------------

def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(directory: Path) -> dict[str, Path]:
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homewatt test CA")])
    ca = _cert("homewatt test CA", ca_key, ca_name, ca_key, ca=True)
    files: dict[str, Path] = {}

    def save(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        files[f"{name}_cert"] = directory / f"{name}.pem"
        files[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}_key"] = directory / f"{name}.key"
        files[f"{name}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    save("ca", ca, ca_key)
    server_key, client_key = _key(), _key()
    save("server", _cert("localhost", server_key, ca_name, ca_key, server=True), server_key)
    save("client", _cert(GW, client_key, ca_name, ca_key), client_key)
    return files


async def test_connects_over_mutual_tls_with_ca_and_client_certificate(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    tls_port = free_port()
    # No `user root` here: running_mosquitto already adds it when running as root (mosquitto
    # would otherwise drop to the mosquitto user, who cannot read pytest's private tmp
    # directory; FIELD-NOTES), and a second `user` line makes mosquitto refuse the config.
    extra = "\n".join([
        f"listener {tls_port} 127.0.0.1",
        f"cafile {pki['ca_cert']}",
        f"certfile {pki['server_cert']}",
        f"keyfile {pki['server_key']}",
        "require_certificate true",
    ])
    workdir = tmp_path / "broker"
    workdir.mkdir()
    with running_mosquitto(workdir, extra) as broker:
        wait_port(tls_port)
        link = PahoUplink(
            settings(f"mqtts://127.0.0.1:{tls_port}", ca_file=pki["ca_cert"],
                     cert_file=pki["client_cert"], key_file=pki["client_key"]),
            client_id=GW, subscriptions=[topics.telemetry_ack(GW)], will=will)
        await link.start()
        try:
            await asyncio.wait_for(link.wait_connected(), 10)
            changes = Changes()
            with FakeCloud(broker.port, GW, changes) as cloud:  # plain listener
                await changes.until(cloud.ready, 10)
                await link.publish(batch(1, 5))
                ack = await next_ack(link)
        finally:
            await link.stop()
    assert [(r.first, r.last) for r in ack.ranges] == [(1, 5)]
