"""Install the homewatt .deb into a scratch root with ``dpkg --root`` and look at the result.

Run as root inside a private mount namespace (``unshare -m --propagation private python3
tests/deb_scratch_root.py ROOT DEB REPORT``): the scratch root gets this machine's ``/usr``
through an overlay (writes land in the overlay, the host's ``/usr`` is never touched), its
own ``/etc`` (copies of the account files), ``/var`` and ``/opt``, and ``/dev`` and ``/proc``.
dpkg then unpacks the package and runs its maintainer scripts chrooted there, for real:
``adduser``, the venv built by the target's ``python3`` from the shipped wheels, ``systemctl
enable``. ``--force-depends`` only because the scratch root's dpkg database does not list
the Debian packages its borrowed ``/usr`` holds.

Writes a JSON report of every observation to REPORT; the test asserts on it. The mounts die
with the namespace when this process exits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow", "login.defs", "nsswitch.conf",
                 "adduser.conf", "deluser.conf")


def sh(*command: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          env=ENV, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({done.returncode}):\n"
                         f"{done.stdout}\n{done.stderr}")
    return done


def prepare(root: Path) -> None:
    for directory in ("usr", ".upper", ".work", "etc", "var/lib/dpkg/info",
                      "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log", "tmp",
                      "dev", "proc", "run", "opt", "root"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for name in ("status", "available"):
        (root / "var/lib/dpkg" / name).touch()
    sh("mount", "-t", "overlay", "overlay", "-o",
       f"lowerdir=/usr,upperdir={root / '.upper'},workdir={root / '.work'}", root / "usr")
    for link in ("bin", "sbin", "lib", "lib64"):
        if Path(f"/{link}").is_symlink():
            os.symlink(os.readlink(f"/{link}"), root / link)
    for name in ACCOUNT_FILES:
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), root / "etc" / name)
    for name in ("pam.d", "security"):  # what adduser/usermod need of a real system's /etc
        if Path("/etc", name).is_dir():
            shutil.copytree(Path("/etc", name), root / "etc" / name, symlinks=True)
    sh("mount", "--bind", "/dev", root / "dev")
    sh("mount", "-t", "proc", "proc", root / "proc")


def in_root(root: Path, *command: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return sh("chroot", root, *command, check=check)


def stat_of(path: Path) -> dict[str, object] | None:
    if not path.exists():
        return None
    st = path.stat()
    return {"mode": oct(st.st_mode & 0o7777), "uid": st.st_uid, "gid": st.st_gid}


def observe(root: Path, report: dict[str, object]) -> None:
    passwd = in_root(root, "getent", "passwd", "homewatt").stdout.strip()
    report["passwd"] = passwd
    report["groups"] = in_root(root, "id", "-nG", "homewatt").stdout.split()
    report["ids"] = {name: in_root(root, "id", "-u" if name == "uid" else "-g",
                                   "homewatt").stdout.strip() for name in ("uid", "gid")}
    for path in ("etc/homewatt", "etc/homewatt/agent.toml", "var/lib/homewatt"):
        report[f"stat:/{path}"] = stat_of(root / path)
    venv = root / "opt/homewatt/venv"
    report["venv_link"] = os.readlink(venv) if venv.is_symlink() else None
    report["help"] = in_root(root, "/usr/bin/homewatt-agent", "--help").stdout
    imports = in_root(root, "/opt/homewatt/venv/bin/python", "-c",
                      "import edge_agent.runtime, gpiozero, lgpio; print('imports ok')")
    report["imports"] = imports.stdout.strip() or imports.stderr.strip()[-300:]
    doctor = in_root(root, "/usr/bin/homewatt-agent", "doctor", "--json")
    report["doctor_exit"] = doctor.returncode
    report["doctor"] = json.loads(doctor.stdout) if doctor.stdout.startswith("{") else \
        doctor.stdout + doctor.stderr
    wants = root / "etc/systemd/system/multi-user.target.wants/homewatt-agent.service"
    report["enabled"] = os.readlink(wants) if wants.is_symlink() else None
    verify = in_root(root, "systemd-analyze", "verify",
                     "/lib/systemd/system/homewatt-agent.service")
    report["verify"] = {"exit": verify.returncode, "output": verify.stderr + verify.stdout}
    security = in_root(root, "systemd-analyze", "security", "--offline=true",
                       "/lib/systemd/system/homewatt-agent.service")
    report["security"] = (security.stdout + security.stderr).strip().splitlines()[-1:]


def main(root_arg: str, deb: str, out: str) -> None:
    root = Path(root_arg)
    prepare(root)
    report: dict[str, object] = {}
    install = sh("dpkg", f"--root={root}", "--force-depends", "--log=/dev/null", "-i", deb,
                 check=False)
    report["install"] = {"exit": install.returncode, "output": install.stdout + install.stderr}
    if install.returncode == 0:
        observe(root, report)
        remove = sh("dpkg", f"--root={root}", "--force-depends", "-r", "homewatt", check=False)
        report["remove_exit"] = remove.returncode
        report["after_remove"] = sorted(str(p.relative_to(root))
                                        for p in (root / "opt").rglob("*"))
        report["config_kept"] = (root / "etc/homewatt/agent.toml").exists()
        purge = sh("dpkg", f"--root={root}", "--force-depends", "-P", "homewatt", check=False)
        report["purge_exit"] = purge.returncode
        report["after_purge"] = {p: (root / p).exists()
                                 for p in ("etc/homewatt", "var/lib/homewatt")}
        report["user_kept"] = bool(in_root(root, "getent", "passwd", "homewatt").stdout)
    Path(out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:4])
