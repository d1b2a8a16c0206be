"""``homewatt-agent provision`` end to end, as an installer runs it: a claim code from
``homewatt-cloud admin create-claim``, provisioning through Mosquitto (generated config) and the
real cloud, then ``homewatt-agent run`` connects with the new identity and only with it."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.bootstrap import CloudService, load_settings
from cloud_sync.db.registry_store import SqlRegistryStore
from edge_agent.config import load_config
from protocols import topics
from protocols.models import GatewayStatus, decode
from tests.e2e.harness import BIN, Proc
from tests.integration.conftest_cloud import started
from tests.tls_broker import CLAIM_IDENTITY, CLOUD_IDENTITY, MqttProbe, TlsBroker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GW = "gw-0042"


@pytest.fixture
def cloud_env(tls_broker: TlsBroker, tmp_path: Path) -> dict[str, str]:
    me = tls_broker.identity(CLOUD_IDENTITY)
    return {**os.environ, "HOMEWATT_DB_URL": f"sqlite:///{tmp_path / 'cloud.sqlite'}",
            "HOMEWATT_MQTT_URL": tls_broker.url, "HOMEWATT_MQTT_CA_FILE": str(me.ca),
            "HOMEWATT_MQTT_CERT_FILE": str(me.cert), "HOMEWATT_MQTT_KEY_FILE": str(me.key),
            "HOMEWATT_DATA_DIR": str(tmp_path / "cloud"),
            "HOMEWATT_CA_DIR": str(tls_broker.ca.directory), "HOMEWATT_CLIENT_ID": "cloud-e2e"}


@pytest.fixture
def cloud(cloud_env: dict[str, str]) -> Iterator[CloudService]:
    names = {k.removeprefix("HOMEWATT_").lower(): v for k, v in cloud_env.items()
             if k.startswith("HOMEWATT_")}
    service = started(load_settings(**names))
    try:
        yield service
    finally:
        service.stop()


def _run(cmd: list[str], env: dict[str, str], stdin: str | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


def test_installer_provisions_a_gateway_and_the_agent_runs_with_it(
        tls_broker: TlsBroker, cloud: CloudService, cloud_env: dict[str, str],
        tmp_path: Path) -> None:
    home = _run([str(BIN / "homewatt-cloud"), "admin", "create-home", "--id", "home-1",
                 "--name", "Müller", "--timezone", "Europe/Berlin"], cloud_env)
    assert home.returncode == 0, home.stderr
    claimed = _run([str(BIN / "homewatt-cloud"), "admin", "create-claim", "--home", "home-1",
                    "--json"], cloud_env)
    assert claimed.returncode == 0, claimed.stderr
    code = json.loads(claimed.stdout)["claim_code"]
    claim = tls_broker.identity(CLAIM_IDENTITY)
    etc, agent_env = tmp_path / "etc", {k: v for k, v in os.environ.items()
                                        if not k.startswith("HOMEWATT_")}
    provision = [str(BIN / "homewatt-agent"), "provision", "--broker",
                 f"mqtts://localhost:{tls_broker.port}", "--ca-file", str(tls_broker.ca_file),
                 "--claim-cert", str(claim.cert), "--claim-key", str(claim.key),
                 "--claim-code", "-", "--serial", "0042", "--out-dir", str(etc),
                 "--data-dir", str(tmp_path / "var"), "--timeout", "15"]
    wrong = _run(provision, agent_env, stdin="ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ\n")
    assert wrong.returncode == 1 and "claim code" in wrong.stderr and "not known" in wrong.stderr
    assert not (etc / "gateway.crt").exists() and not (etc / "gateway.key").exists()

    # As root (CI) the files are handed to the service user's group, as the package's agent
    # runs as its own user; "nobody" stands in for it here.
    as_root = os.geteuid() == 0
    done = _run([*provision, "--user", "nobody"] if as_root else provision, agent_env,
                stdin=code + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"gateway {GW} is provisioned" in done.stdout
    assert "connected as gw-0042 with the new certificate" in done.stdout

    key = etc / "gateway.key"
    if as_root:
        assert stat.S_IMODE(key.stat().st_mode) == 0o640  # its group reads, others never
        assert key.stat().st_gid == pwd.getpwnam("nobody").pw_gid
        assert f"made {key} readable by nobody" in done.stdout
    else:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in (tmp_path / "cloud.sqlite").read_bytes()  # never sent
    config = load_config(etc / "agent.toml")
    assert config.gateway_id == GW and config.mqtt.key_file == key
    registered = SqlRegistryStore(cloud.engine, cloud.store.breaker).gateway(GW)
    assert registered is not None and registered.home_id == "home-1"  # the registry entry

    again = _run(provision, agent_env, stdin=code + "\n")
    assert again.returncode == 2 and "already provisioned" in again.stderr

    watcher = MqttProbe.connect(tls_broker, tls_broker.identity(CLOUD_IDENTITY))
    agent = Proc("agent", [str(BIN / "homewatt-agent"), "run", "--config",
                           str(etc / "agent.toml")], agent_env, tmp_path)
    try:
        watcher.subscribe(topics.status(GW))
        agent.start()
        online = watcher.wait_for(topics.status(GW), 30)
        assert decode(GatewayStatus, online.payload).state == "online", agent.log.read_text()
    finally:
        assert agent.terminate() == 0
        watcher.close()
