"""``homewatt-agent doctor``: the gateway's checks, each a pass/fail with the fix.

Every check returns :class:`Check` s; none raises. Local checks live here (config, serial
ports and their permissions for the service user, TLS files and certificate expiry, clock
sync, disk space for the buffer); the ones that talk to devices (meters, broker) are in
:mod:`edge_agent.doctor_net`; :mod:`edge_agent.doctor_cli` runs them all and prints the
checklist. Messages are stable: ``docs/installer.md``'s troubleshooting table is keyed by them.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge_agent.config import AgentConfig, load_config
from edge_agent.errors import ConfigError

__all__ = ["Check", "ServiceUser", "Status", "check_clock", "check_config", "check_disk",
           "check_serial_ports", "check_tls", "may_access"]

CERT_WARN_DAYS = 30
DISK_MARGIN_BYTES = 64 * 1024 * 1024  # WAL, command window, S0 state next to the buffer


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 - a check result, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    name: str  # "serial /dev/ttyUSB0", "meter grid", "broker", ...
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail,
                "fix": self.fix}


@dataclass(frozen=True)
class ServiceUser:
    """Whose permissions count: the user the agent runs as (``homewatt`` when packaged)."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def named(cls, name: str) -> ServiceUser:
        """Raises ``KeyError`` when there is no such user."""
        entry = pwd.getpwnam(name)
        gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
        return cls(name, entry.pw_uid, frozenset(gids))

    @classmethod
    def current(cls) -> ServiceUser:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset({os.getegid(), *os.getgroups()}))


def may_access(mode: int, owner: int, group: int, user: ServiceUser, want: int) -> bool:
    """Pure: whether ``user`` gets ``want`` (bits of 0o7: 4 read, 2 write, 1 exec) on a file of
    ``mode`` owned by ``owner:group`` under the classic owner/group/other rules (root: all)."""
    if user.uid == 0:
        return True
    if user.uid == owner:
        bits = (mode >> 6) & 0o7
    elif group in user.gids:
        bits = (mode >> 3) & 0o7
    else:
        bits = mode & 0o7
    return bits & want == want


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    return f"{stat.filemode(st.st_mode)} {user}:{_group_name(st.st_gid)}"


def check_config(path: Path) -> tuple[Check, AgentConfig | None]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return Check("config", Status.FAIL, f"{path}: {exc}",
                     "correct that key (see the configuration reference in README.md)"), None
    summary = (f"{path} is valid: gateway {config.gateway_id}, {len(config.buses)} bus(es), "
               f"{len(config.meters)} meter(s), {len(config.actuators)} actuator(s)")
    return Check("config", Status.PASS, summary), config


def check_serial_ports(config: AgentConfig, user: ServiceUser) -> list[Check]:
    checks = []
    for bus in config.buses:
        if bus.kind != "rtu" or bus.serial_port is None:
            continue
        checks.append(_serial_port(Path(bus.serial_port), user))
    return checks


def _serial_port(path: Path, user: ServiceUser) -> Check:
    name = f"serial {path}"
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(name, Status.FAIL, f"{path} does not exist",
                     "plug in the RS485 adapter and check its name with "
                     "`ls -l /dev/serial/by-id/`; set serial_port to it")
    except OSError as exc:
        return Check(name, Status.FAIL, f"cannot inspect {path}: {exc.strerror}",
                     "check the path in serial_port")
    if not stat.S_ISCHR(st.st_mode):
        return Check(name, Status.FAIL, f"{path} is not a character device",
                     "serial_port must name a tty device such as /dev/ttyUSB0")
    if not may_access(st.st_mode, st.st_uid, st.st_gid, user, 0o6):
        group = _group_name(st.st_gid)
        return Check(name, Status.FAIL, f"user {user.name} may not read and write {path} "
                     f"({_owner(st)})", f"sudo usermod -aG {group} {user.name}, then restart "
                     "the agent (systemctl restart homewatt-agent)")
    if user.uid == os.geteuid():
        try:
            os.close(os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
        except OSError as exc:
            return Check(name, Status.FAIL, f"cannot open {path}: {exc.strerror}",
                         "unplug and replug the adapter; check `dmesg | tail` for errors")
    return Check(name, Status.PASS, f"{user.name} may open {path} ({_owner(st)})")


def _load_certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _expiry(what: str, name: str, cert: x509.Certificate, now: datetime) -> Check:
    left = cert.not_valid_after_utc - now
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    subject = cert.subject.rfc4514_string() or "(no subject)"
    if now < cert.not_valid_before_utc:
        return Check(name, Status.FAIL, f"{what} {subject} is not valid before "
                     f"{cert.not_valid_before_utc:%Y-%m-%d}: the clock is wrong or the "
                     "certificate is new", "sync the clock (see the clock check)")
    if left.total_seconds() <= 0:
        return Check(name, Status.FAIL, f"{what} {subject} expired on {until}",
                     "re-provision the gateway (homewatt-agent provision) for a new "
                     "certificate" if what == "certificate" else "install the current CA file")
    if left.days < CERT_WARN_DAYS:
        return Check(name, Status.WARN, f"{what} {subject} expires on {until} "
                     f"({left.days} days)", "renew it before it expires")
    return Check(name, Status.PASS, f"{what} {subject} valid until {until} ({left.days} days)")


def check_tls(config: AgentConfig, now: datetime | None = None,
              user: ServiceUser | None = None) -> list[Check]:
    """CA, client certificate and key: readable (by ``user``, the service user, too),
    parseable, matching, not expiring."""
    now = now or datetime.now(UTC)
    mqtt = config.mqtt
    if not mqtt.url.startswith("mqtts://") and mqtt.cert_file is None:
        return [Check("tls", Status.SKIP, f"{mqtt.url} is plain MQTT: no TLS configured")]
    checks: list[Check] = []
    if mqtt.ca_file is not None:
        checks.append(_file_check("tls ca_file", mqtt.ca_file, lambda p: [
            _expiry("CA", "tls ca_file", cert, now) for cert in _load_certs(p)]))
    else:
        checks.append(Check("tls ca_file", Status.PASS, "not set: the system CA store is used"))
    if mqtt.cert_file is not None and mqtt.key_file is not None:
        cert_file, key_file = mqtt.cert_file, mqtt.key_file
        checks.append(_file_check("tls cert_file", cert_file, lambda p: [
            _expiry("certificate", "tls cert_file", _load_certs(p)[0], now)]))
        checks.append(_file_check("tls key_file", key_file,
                                  lambda p: [_key_matches(p, cert_file)]))
    if user is not None:
        paths = [("tls ca_file", mqtt.ca_file), ("tls cert_file", mqtt.cert_file),
                 ("tls key_file", mqtt.key_file)]
        checks = [_readable_by(check, dict(paths).get(check.name), user) for check in checks]
    return checks


def _readable_by(check: Check, path: Path | None, user: ServiceUser) -> Check:
    """``check`` unless ``user`` (who runs the agent) cannot read ``path``."""
    if path is None or check.status is Status.FAIL or not path.exists():
        return check
    st = path.stat()
    if may_access(st.st_mode, st.st_uid, st.st_gid, user, 0o4):
        return check
    return Check(check.name, Status.FAIL, f"user {user.name} may not read {path} "
                 f"({_owner(st)})", f"sudo chgrp {user.name} {path} && sudo chmod 0640 {path}")


def _file_check(name: str, path: Path, inspect: Callable[[Path], list[Check]]) -> Check:
    """Worst of what ``inspect`` says; a missing or unparsable file is a failure."""
    try:
        results = inspect(path)
    except FileNotFoundError:
        return Check(name, Status.FAIL, f"{path} does not exist",
                     "provision the gateway (homewatt-agent provision) or fix the path")
    except PermissionError:
        return Check(name, Status.FAIL, f"{path} is not readable by this user",
                     f"chgrp homewatt {path} && chmod 0640 {path}")
    except (ValueError, IndexError) as exc:
        return Check(name, Status.FAIL, f"{path} is not a PEM file of the right kind: {exc}",
                     "replace it with the PEM file from provisioning")
    order = [Status.FAIL, Status.WARN, Status.PASS, Status.SKIP]
    return min(results, key=lambda c: order.index(c.status))


def _key_matches(key_path: Path, cert_path: Path) -> Check:
    name = "tls key_file"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    try:
        cert = _load_certs(cert_path)[0]
    except (OSError, ValueError, IndexError):
        return Check(name, Status.SKIP, "the certificate could not be read: see cert_file")
    if cert.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo):
        return Check(name, Status.FAIL, f"{key_path} does not belong to {cert_path}",
                     "use the key generated with this certificate (re-provision if lost)")
    if key_path.stat().st_mode & 0o004:
        return Check(name, Status.WARN, f"{key_path} is readable by every user",
                     f"chmod 0640 {key_path}")
    return Check(name, Status.PASS, f"{key_path} matches the certificate")


class SyncDescriber(Protocol):
    """What the clock check needs (``LinuxClockSync`` has both)."""

    def synced(self) -> bool: ...

    def describe(self) -> str: ...


def check_clock(source: SyncDescriber) -> Check:
    if source.synced():
        return Check("clock", Status.PASS, source.describe())
    return Check("clock", Status.FAIL, source.describe(),
                 "enable NTP (sudo timedatectl set-ntp true), allow UDP port 123 out, and "
                 "watch `timedatectl timesync-status`; readings are held until it syncs")


def check_disk(config: AgentConfig, user: ServiceUser) -> Check:
    """Room for the buffer's budget, in a directory the service user may write."""
    directory = config.buffer_path.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    st = existing.stat()
    if not may_access(st.st_mode, st.st_uid, st.st_gid, user, 0o3):
        return Check("disk", Status.FAIL, f"user {user.name} may not write {existing} "
                     f"({_owner(st)})", f"sudo install -d -o {user.name} {directory}")
    free = shutil.disk_usage(existing).free
    used = config.buffer_path.stat().st_size if config.buffer_path.exists() else 0
    needed = config.buffer.max_bytes - used + DISK_MARGIN_BYTES
    mib = 1024 * 1024
    if free < needed:
        return Check("disk", Status.FAIL, f"{free // mib} MiB free on {existing}, the buffer "
                     f"may need {needed // mib} MiB (buffer.max_bytes = "
                     f"{config.buffer.max_bytes // mib} MiB)",
                     "free space on the SD card or lower buffer.max_bytes")
    return Check("disk", Status.PASS, f"{free // mib} MiB free on {existing} for a "
                 f"{config.buffer.max_bytes // mib} MiB buffer")
