"""doctor's checks against real things, each passing and failing: a serial device (a real
pseudo-terminal), meters (the simulator over Modbus TCP), the broker (Mosquitto, plain and
TLS with client certificates), and the whole ``homewatt-agent doctor`` checklist."""

from __future__ import annotations

import grp
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from edge_agent.doctor import Check, ServiceUser, Status, check_serial_ports
from edge_agent.doctor_net import check_broker, read_meters
from simulator import MeterSimulator
from tests.services import Mosquitto, free_port
from tests.tls_broker import TlsBroker
from tests.tls_material import TestCA

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def pty() -> Iterator[str]:
    controller, device = os.openpty()
    try:
        yield os.ttyname(device)
    finally:
        os.close(device)
        os.close(controller)


def rtu_config(port: str) -> AgentConfig:
    return AgentConfig(gateway_id="gw-doc", buses=[{"name": "rs485", "kind": "rtu",
                                                    "serial_port": port}])


def test_serial_check_passes_an_openable_tty_and_fails_missing_or_forbidden(pty: str) -> None:
    me = ServiceUser.current()
    [ok] = check_serial_ports(rtu_config(pty), me)
    [missing] = check_serial_ports(rtu_config("/dev/ttyHOMEWATT9"), me)
    assert ok.status is Status.PASS, ok
    assert missing.status is Status.FAIL and "does not exist" in missing.detail
    # A pty is crw--w---- owned by its user (and group tty on most systems): nobody else
    # may open it.
    stranger = ServiceUser("nobody", 65534, frozenset({65534}))
    [forbidden] = check_serial_ports(rtu_config(pty), stranger)
    assert forbidden.status is Status.FAIL
    assert f"user nobody may not read and write {pty}" in forbidden.detail
    group = grp.getgrgid(os.stat(pty).st_gid).gr_name
    assert forbidden.fix is not None and f"sudo usermod -aG {group} nobody" in forbidden.fix


@pytest.fixture
async def sim() -> AsyncIterator[int]:
    simulator = MeterSimulator(seed=5, tick_s=0.1)
    port = await simulator.start("127.0.0.1", port=0)
    try:
        yield port
    finally:
        await simulator.stop()


async def test_meter_check_reads_each_meter_and_fails_a_silent_one(sim: int) -> None:
    config = AgentConfig(
        gateway_id="gw-doc",
        buses=[{"name": "main", "kind": "tcp", "host": "127.0.0.1", "port": sim,
                "timeout_s": 0.3}],
        meters=[{"id": "grid", "model": "sdm630", "bus": "main", "unit": 1},
                {"id": "pv", "model": "sunspec", "bus": "main", "unit": 126},
                {"id": "ghost", "model": "sdm120", "bus": "main", "unit": 9}])
    checks = {c.name: c for c in await read_meters(config)}
    assert checks["meter grid"].status is Status.PASS
    assert "power" in checks["meter grid"].detail
    assert checks["meter pv"].status is Status.PASS
    ghost = checks["meter ghost"]
    assert ghost.status is Status.FAIL and "no answer within 0.3s" in ghost.detail
    assert ghost.fix is not None and "swap A/B" in ghost.fix


def test_broker_check_passes_a_running_broker_and_fails_a_closed_port(
        mosquitto: Mosquitto) -> None:
    ok = check_broker(AgentConfig(gateway_id="gw-doc", mqtt={"url": mosquitto.url}), 5)
    closed = check_broker(AgentConfig(gateway_id="gw-doc", mqtt={
        "url": f"mqtt://127.0.0.1:{free_port()}"}), 5)
    assert ok.status is Status.PASS, ok
    assert closed.status is Status.FAIL and "refused the connection" in closed.detail


def test_broker_check_over_tls_with_client_certificates(tls_broker: TlsBroker,
                                                        tmp_path: Path) -> None:
    """Against the broker config homewatt-cloud generates (client certificates required)."""
    mine = tls_broker.identity("gw-doc")

    def check(ca: Path, cert: Path, key: Path) -> Check:
        return check_broker(AgentConfig(gateway_id="gw-doc", mqtt={
            "url": tls_broker.url, "ca_file": ca, "cert_file": cert, "key_file": key}), 5)

    ok = check(mine.ca, mine.cert, mine.key)
    stranger = TestCA(tmp_path, name="other CA")
    wrong_ca = check(stranger.path, mine.cert, mine.key)
    foreign = stranger.issue("gw-doc")  # a certificate the broker's CA never signed
    untrusted = check(mine.ca, foreign.cert, foreign.key)
    assert ok.status is Status.PASS, ok
    assert wrong_ca.status is Status.FAIL
    assert "TLS with 127.0.0.1" in wrong_ca.detail
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_ca.detail
    assert untrusted.status is Status.FAIL, untrusted
    assert "rejected this gateway's certificate" in untrusted.detail
    assert untrusted.fix is not None and untrusted.fix.startswith("the broker does not trust")


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(body)
    return path


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "doctor", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_doctor_prints_a_checklist_and_exits_by_the_worst_result(
        mosquitto: Mosquitto, tmp_path: Path, pty: str) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()  # timesyncd's flag: the clock counts as synced
    config = write_config(tmp_path, f'''gateway_id = "gw-doc"
data_dir = "{tmp_path / 'data'}"
[mqtt]
url = "{mosquitto.url}"
[clock]
timesync_flag = "{flag}"
[[buses]]
name = "rs485"
kind = "rtu"
serial_port = "{pty}"
timeout_s = 0.2
''')
    passing = doctor("--config", str(config))
    assert passing.returncode == 0, passing.stdout
    lines = passing.stdout.splitlines()
    for name in ("config", f"serial {pty}", "broker", "clock", "disk"):
        assert any(line.startswith("PASS") and name in line for line in lines), (name, lines)
    assert any(line.startswith("SKIP  tls") for line in lines)

    unplugged = write_config(tmp_path, config.read_text().replace(pty, "/dev/ttyHOMEWATT9"))
    failing = doctor("--config", str(unplugged), "--json")
    report = json.loads(failing.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert failing.returncode == 1
    assert by_name["serial /dev/ttyHOMEWATT9"]["status"] == "FAIL"
    assert by_name["serial /dev/ttyHOMEWATT9"]["fix"].startswith("plug in the RS485 adapter")
    assert by_name["broker"]["status"] == "PASS"

    broken = write_config(tmp_path, 'gateway_id = "gw doc"\n')
    bad = doctor("--config", str(broken))
    assert bad.returncode == 2
    assert "FAIL  config" in bad.stdout and "gateway_id" in bad.stdout
