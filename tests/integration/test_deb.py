"""The Debian package: built once per session with packaging/build_deb.py, its contents,
control fields, maintainer scripts and systemd unit checked, then installed into a scratch
root with ``dpkg --root`` (maintainer scripts run for real, chrooted) and removed again."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import missing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "homewatt-agent.service"


def need(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            missing(f"{program} not found (scripts/install-system-deps installs it)")


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("dpkg-deb")
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run([sys.executable, str(ROOT / "packaging" / "build_deb.py"),
                            "--out", str(out)], capture_output=True, text=True, timeout=200,
                           check=False)
    assert built.returncode == 0, built.stderr + built.stdout
    path = Path(built.stdout.strip().splitlines()[-1])
    assert path.exists() and path.parent == out
    return path


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_package_contents_and_control(deb: Path) -> None:
    listing = dpkg_deb("--contents", str(deb))
    paths = {line.split()[5].removeprefix(".") for line in listing.splitlines()}
    for expected in ("/lib/systemd/system/homewatt-agent.service", "/opt/homewatt/share/agent.toml",
                     "/opt/homewatt/bin/homewatt-setup-venv", "/usr/share/doc/homewatt/copyright",
                     "/opt/homewatt/share/doc/installer.md", "/usr/bin/homewatt-agent"):
        assert expected in paths, expected
    wheels = {p.rsplit("/", 1)[1].split("-")[0].lower() for p in paths
              if p.startswith("/opt/homewatt/wheels/") and p.endswith(".whl")}
    assert {"homewatt", "pydantic", "pymodbus", "paho_mqtt", "gpiozero", "lgpio"} <= wheels
    assert "/usr/bin/homewatt-agent -> /opt/homewatt/venv/bin/homewatt-agent" in listing
    assert " root/root " in listing and not re.search(r" \d+/\d+ ", listing)
    control = dpkg_deb("--field", str(deb))
    fields = dict(line.split(": ", 1) for line in control.splitlines() if ": " in line)
    assert fields["Package"] == "homewatt"
    assert fields["Architecture"] == subprocess.run(["dpkg", "--print-architecture"],
                                                    capture_output=True, text=True,
                                                    check=True).stdout.strip()
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"python3 (>= {minor})" in fields["Depends"] and "python3-venv" in fields["Depends"]


def test_maintainer_scripts_are_valid_shell(deb: Path, tmp_path: Path) -> None:
    dpkg_deb("--control", str(deb), str(tmp_path / "DEBIAN"))
    for name in ("postinst", "prerm", "postrm"):
        script = tmp_path / "DEBIAN" / name
        assert os.access(script, os.X_OK), name
        assert script.read_text().startswith("#!/bin/sh\n")
        subprocess.run(["sh", "-n", str(script)], check=True)
    postinst = (tmp_path / "DEBIAN" / "postinst").read_text()
    assert "adduser --system --group" in postinst and "dialout gpio" in postinst
    assert "homewatt-setup-venv" in postinst


def test_unit_declares_notify_watchdog_restart_and_hardening() -> None:
    text = UNIT.read_text()
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    expected = {"Type": "notify", "Restart": "on-failure", "ProtectSystem": "strict",
                "PrivateTmp": "yes", "NoNewPrivileges": "yes", "User": "homewatt",
                "StateDirectory": "homewatt", "WatchdogSec": "30"}
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert settings["SupplementaryGroups"] == ["dialout gpio"]
    assert settings["ExecStart"] == ["/opt/homewatt/venv/bin/homewatt-agent run --config "
                                     "/etc/homewatt/agent.toml"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    need("systemd-analyze")
    # verify checks that ExecStart's binary exists: point it at a scratch copy.
    binary = tmp_path / "homewatt-agent"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = tmp_path / "homewatt-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/homewatt/venv/bin/homewatt-agent",
                                             str(binary)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "homewatt-agent.service" not in done.stderr, done.stderr  # no warnings about it


def test_package_installs_into_a_scratch_root_and_removes_cleanly(deb: Path,
                                                                  tmp_path: Path) -> None:
    need("unshare", "chroot", "dpkg")
    if os.geteuid() != 0:
        missing("installing into a scratch root needs root (CI runs as root)")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode:
        missing("unshare -m is not permitted here (no mount namespaces)")
    report_file = tmp_path / "report.json"
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                           str(ROOT / "tests" / "deb_scratch_root.py"), str(tmp_path / "root"),
                           str(deb), str(report_file)], capture_output=True, text=True,
                          timeout=200, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(report_file.read_text())
    assert report["install"]["exit"] == 0, report["install"]["output"]
    # The service user, in the groups its devices need.
    assert report["passwd"].endswith(":/var/lib/homewatt:/usr/sbin/nologin")
    assert {"homewatt", "dialout", "gpio"} <= set(report["groups"])
    uid, gid = int(report["ids"]["uid"]), int(report["ids"]["gid"])
    assert report["stat:/var/lib/homewatt"] == {"mode": "0o750", "uid": uid, "gid": gid}
    assert report["stat:/etc/homewatt"] == {"mode": "0o750", "uid": 0, "gid": gid}
    assert report["stat:/etc/homewatt/agent.toml"] == {"mode": "0o640", "uid": 0, "gid": gid}
    # Its own venv, built from the shipped wheels by the target's python3, offline.
    assert report["venv_link"].startswith("venv-")
    assert report["imports"] == "imports ok"
    assert "scan" in report["help"] and "doctor" in report["help"]
    # doctor runs against the packaged config, as the service user.
    doctor = report["doctor"]
    assert doctor["user"] == "homewatt"
    assert doctor["checks"][0]["status"] == "PASS", doctor["checks"][0]
    assert report["enabled"] == "/lib/systemd/system/homewatt-agent.service"
    assert report["verify"] == {"exit": 0, "output": ""}
    assert report["security"] and "exposure level" in report["security"][0]
    # Removal takes what postinst made; purge also config and data; the user stays.
    assert report["remove_exit"] == 0
    assert report["after_remove"] == []
    assert report["config_kept"] is True
    assert report["purge_exit"] == 0
    assert report["after_purge"] == {"etc/homewatt": False, "var/lib/homewatt": False}
    assert report["user_kept"] is True
