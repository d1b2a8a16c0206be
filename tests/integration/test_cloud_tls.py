"""The cloud service over mqtts:// with its own client certificate, through the generated broker
config: it ingests a gateway's telemetry and acks it on the gateway's own topic."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cloud_sync.bootstrap import load_settings
from cloud_sync.cli import main as cloud_main
from protocols import TelemetryAck, decode, encode, topics
from tests.integration.conftest_cloud import make_batch, register, started
from tests.tls_broker import CLOUD_IDENTITY, MqttProbe, TlsBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GW = "gw-tls"


def test_cloud_ingests_and_acks_over_mutual_tls(tls_broker: TlsBroker, tmp_path: Path) -> None:
    identity = tls_broker.identity(CLOUD_IDENTITY)
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'cloud.sqlite'}",
                             mqtt_url=tls_broker.url, data_dir=tmp_path,
                             mqtt_ca_file=identity.ca, mqtt_cert_file=identity.cert,
                             mqtt_key_file=identity.key, client_id="cloud-tls")
    register(settings, GW)
    service = started(settings)
    gateway = MqttProbe.connect(tls_broker, tls_broker.identity(GW))
    try:
        gateway.subscribe(topics.telemetry_ack(GW))
        gateway.publish(topics.telemetry(GW), encode(make_batch(1, 5, gw=GW)))
        ack = decode(TelemetryAck, gateway.wait_for(topics.telemetry_ack(GW), 15).payload)
        assert [(r.first, r.last) for r in ack.ranges] == [(1, 5)]
        assert service.store.latest(GW)
    finally:
        gateway.close()
        service.stop()


def test_tls_settings_are_checked_before_connecting(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    env = {"HOMEWATT_DATA_DIR": str(tmp_path)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("HOMEWATT_MQTT_URL", "mqtt://127.0.0.1:1883")
        mp.setenv("HOMEWATT_MQTT_CERT_FILE", str(tmp_path / "c.crt"))
        assert cloud_main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "HOMEWATT_MQTT_CERT_FILE and HOMEWATT_MQTT_KEY_FILE go together" in err


def test_broker_config_cli_writes_a_working_layout(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir, out = tmp_path / "ca", tmp_path / "broker"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOMEWATT_DATA_DIR", str(tmp_path))
        assert cloud_main(["ca", "init", "--ca-dir", str(ca_dir)]) == 0
        assert cloud_main(["ca", "init", "--ca-dir", str(ca_dir)]) == 1  # never overwrites
        assert cloud_main(["broker-config", "--ca-dir", str(ca_dir), "--out", str(out),
                           "--hostname", "broker.example", "--broker-user", "root"]) == 0
        assert cloud_main(["ca", "issue", CLOUD_IDENTITY, "--ca-dir", str(ca_dir),
                           "--out", str(tmp_path / "ids"), "--json"]) == 0
        assert cloud_main(["broker-config", "--ca-dir", str(tmp_path / "none"), "--out",
                           str(out), "--hostname", "x"]) == 1
    captured = capsys.readouterr()
    assert "already holds a CA" in captured.err and "run `homewatt-cloud ca init" in captured.err
    for private in (ca_dir / "ca.key", out / "server.key", tmp_path / "ids" / "homewatt_cloud.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    conf = (out / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    assert "allow_anonymous false" in conf
    assert "pattern readwrite hw/%u/#" in (out / "acl").read_text()
