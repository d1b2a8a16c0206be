"""doctor's local checks, each with a passing and a failing setup: config, permissions, TLS
files and certificate expiry (certificates made with cryptography), clock sync, disk."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from edge_agent.clock_sync import LinuxClockSync
from edge_agent.config import AgentConfig
from edge_agent.doctor import (
    ServiceUser,
    Status,
    check_clock,
    check_config,
    check_disk,
    check_tls,
    may_access,
)
from tests.tls_material import TestCA

ROOT = ServiceUser("root", 0, frozenset({0}))
AGENT = ServiceUser("homewatt", 990, frozenset({990, 20}))  # 20: dialout


def test_permissions_follow_owner_group_other() -> None:
    dialout_tty = 0o20660  # crw-rw---- root:dialout, as /dev/ttyUSB0 on Debian
    assert may_access(dialout_tty, 0, 20, AGENT, 0o6)
    assert not may_access(dialout_tty, 0, 21, AGENT, 0o6)
    assert may_access(0o600, 990, 0, AGENT, 0o6)
    assert not may_access(0o400, 990, 0, AGENT, 0o6)
    assert may_access(0o000, 5, 5, ROOT, 0o6)


def test_config_check_passes_a_valid_file_and_names_the_bad_key(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('gateway_id = "gw-1"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_id = "gw-1"\n[mqtt]\nurll = "x"\n')
    passed, config = check_config(good)
    failed, none = check_config(bad)
    missing, _ = check_config(tmp_path / "missing.toml")
    assert passed.status is Status.PASS and config is not None
    assert failed.status is Status.FAIL and none is None
    assert "mqtt.urll: unknown key" in failed.detail
    assert missing.status is Status.FAIL and "does not exist" in missing.detail


def tls_config(tmp_path: Path, cert: Path, key: Path, ca: Path) -> AgentConfig:
    return AgentConfig(gateway_id="gw-1", data_dir=tmp_path,
                       mqtt={"url": "mqtts://broker.example:8883", "ca_file": ca,
                             "cert_file": cert, "key_file": key})


def statuses(config: AgentConfig) -> dict[str, tuple[Status, str]]:
    return {c.name: (c.status, c.detail) for c in check_tls(config)}


def test_tls_check_passes_a_valid_certificate(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("gw-1", days=365)
    got = statuses(tls_config(tmp_path, issued.cert, issued.key, ca.path))
    assert {name: status for name, (status, _) in got.items()} == {
        "tls ca_file": Status.PASS, "tls cert_file": Status.PASS, "tls key_file": Status.PASS}
    assert "CN=gw-1 valid until" in got["tls cert_file"][1]


@pytest.mark.parametrize(("days", "starts", "status", "says"), [
    (-2, -10, Status.FAIL, "expired on"),
    (10, -1, Status.WARN, "(9 days)"),
    (365, 2, Status.FAIL, "is not valid before"),
])
def test_tls_check_flags_expired_expiring_and_future_certificates(
        tmp_path: Path, days: float, starts: float, status: Status, says: str) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("gw-1", days=days, starts_in_days=starts)
    got = statuses(tls_config(tmp_path, issued.cert, issued.key, ca.path))["tls cert_file"]
    assert got[0] is status
    assert says in got[1]


def test_tls_check_fails_a_foreign_key_and_a_missing_file(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    mine, other = ca.issue("gw-1"), ca.issue("gw-2")
    got = statuses(tls_config(tmp_path, mine.cert, other.key, ca.path))
    assert got["tls key_file"][0] is Status.FAIL
    assert "does not belong to" in got["tls key_file"][1]
    gone = statuses(tls_config(tmp_path, tmp_path / "nope.pem", mine.key, ca.path))
    assert gone["tls cert_file"] == (Status.FAIL, f"{tmp_path / 'nope.pem'} does not exist")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    bad_ca = statuses(tls_config(tmp_path, mine.cert, mine.key, garbage))["tls ca_file"]
    assert bad_ca[0] is Status.FAIL and "not a PEM file" in bad_ca[1]


def test_tls_check_warns_about_a_world_readable_key(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("gw-1")
    issued.key.chmod(0o644)
    got = statuses(tls_config(tmp_path, issued.cert, issued.key, ca.path))["tls key_file"]
    assert got == (Status.WARN, f"{issued.key} is readable by every user")


def test_tls_check_is_skipped_for_plain_mqtt(tmp_path: Path) -> None:
    checks = check_tls(AgentConfig(gateway_id="gw-1", data_dir=tmp_path))
    assert [(c.name, c.status) for c in checks] == [("tls", Status.SKIP)]


def test_clock_check_passes_when_timesyncd_synced_and_fails_otherwise(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    synced_not = check_clock(LinuxClockSync(flag_file=flag, use_adjtimex=False))
    flag.touch()
    synced = check_clock(LinuxClockSync(flag_file=flag, use_adjtimex=False))
    assert synced_not.status is Status.FAIL
    assert synced_not.fix is not None and "timedatectl set-ntp true" in synced_not.fix
    assert synced.status is Status.PASS and "systemd-timesyncd has synced" in synced.detail


def test_disk_check_passes_room_and_fails_a_too_big_budget(tmp_path: Path) -> None:
    ok = check_disk(AgentConfig(gateway_id="gw-1", data_dir=tmp_path / "data"), ROOT)
    huge = check_disk(AgentConfig(gateway_id="gw-1", data_dir=tmp_path,
                                  buffer={"max_bytes": 10**16}), ROOT)
    assert ok.status is Status.PASS and "MiB free" in ok.detail
    assert huge.status is Status.FAIL and "lower buffer.max_bytes" in (huge.fix or "")


def test_disk_check_fails_a_directory_the_service_user_cannot_write(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    owner = os.stat(locked).st_uid
    stranger = ServiceUser("stranger", owner + 12345, frozenset({owner + 12345}))
    got = check_disk(AgentConfig(gateway_id="gw-1", data_dir=locked / "data"), stranger)
    assert got.status is Status.FAIL
    assert f"user stranger may not write {locked}" in got.detail
    assert got.fix == f"sudo install -d -o stranger {locked / 'data'}"


def test_certificate_days_are_counted_from_the_given_now(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("gw-1", days=100)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=80)
    check = {c.name: c for c in check_tls(tls_config(tmp_path, issued.cert, issued.key,
                                                     ca.path), now=later)}
    assert check["tls cert_file"].status is Status.WARN


def test_tls_files_the_service_user_cannot_read_fail(tmp_path: Path) -> None:
    """provision run as root writes the key 0600 root:root: the agent, as homewatt, could not
    read it."""
    ca = TestCA(tmp_path)
    issued = ca.issue("gw-1")
    config = tls_config(tmp_path, issued.cert, issued.key, ca.path)
    owner = os.stat(issued.key).st_uid
    stranger = ServiceUser("homewatt", owner + 4242, frozenset({owner + 4242}))
    got = {c.name: c for c in check_tls(config, user=stranger)}
    assert got["tls key_file"].status is Status.FAIL  # 0600 and not its owner
    assert got["tls key_file"].detail.startswith(f"user homewatt may not read {issued.key}")
    assert got["tls key_file"].fix == (f"sudo chgrp homewatt {issued.key} && "
                                       f"sudo chmod 0640 {issued.key}")
    assert got["tls cert_file"].status is Status.PASS  # 0644
    owner_user = ServiceUser("me", owner, frozenset({owner}))
    assert {c.status for c in check_tls(config, user=owner_user)} == {Status.PASS}
