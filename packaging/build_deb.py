#!/usr/bin/env python3
"""Build the homewatt Debian package: ``python3 packaging/build_deb.py --out dist``.

The package ships the agent as wheels (the project's and every dependency's, built for this
machine's architecture and Python minor version) under ``/opt/homewatt/wheels``; its
``postinst`` creates ``/opt/homewatt/venv`` from them with the target's own ``python3``,
offline (see packaging/README.md for why). Also shipped: the systemd unit, the default
config (copied to ``/etc/homewatt/agent.toml`` on first install) and the installer guide.

Build on the architecture you deploy to (a Raspberry Pi or an arm64 runner for a Pi): native
wheels (pydantic-core, cryptography, psutil, lgpio...) are per architecture. Needs
``dpkg-deb`` and pip (pip's cache makes rebuilds fast). Prints each step; exit 0 with the
.deb path on the last line, 1 when a step failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "packaging"
PREFIX = Path("opt/homewatt")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SOURCE_SKIP = (".git", ".venv", "build", "dist", "var", "tests", "bench", "*.egg-info",
               "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis")

CONTROL = """Package: homewatt
Version: {version}
Architecture: {arch}
Maintainer: homewatt maintainers <maintainers@homewatt.invalid>
Installed-Size: {size_kib}
Depends: python3 (>= {py}), python3 (<< {py_next}), python3-venv, adduser
Recommends: systemd-timesyncd | time-daemon
Section: net
Priority: optional
Homepage: https://github.com/homewatt/homewatt
Description: homewatt edge agent for home-energy gateways
 Reads electricity meters over Modbus RTU/TCP and S0 pulse inputs, buffers every
 reading durably and syncs with the homewatt cloud (or AWS IoT Core), executes
 commands at most once behind safety interlocks, and runs as a systemd service
 with a health-gated watchdog. Installer tools: homewatt-agent scan, doctor, setup.
"""

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: homewatt
License: {license}
Files: *
Copyright: the homewatt authors
License: {license}
 Bundled wheels under /opt/homewatt/wheels carry their own licenses in their metadata.
"""


class BuildError(Exception):
    """A build step failed; the message says which and why."""


def step(text: str) -> None:
    print(f"[build-deb] {text}", flush=True)


def run(*command: str | Path) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BuildError(f"{Path(str(command[0])).name} failed ({done.returncode}): "
                         + " / ".join(tail))
    return done.stdout


def project() -> tuple[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    license_info = meta.get("license", {})
    return meta["version"], license_info.get("text", "see upstream")


def python_minor(python: str) -> tuple[int, int]:
    out = run(python, "-c", "import sys; print(*sys.version_info[:2])").split()
    return int(out[0]), int(out[1])


def install(source: Path, target: Path, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def stage(staging: Path, version: str, license_name: str, python: str) -> None:
    """Every file of the package under ``staging`` (DEBIAN/ included, control last)."""
    opt = staging / PREFIX
    wheels = opt / "wheels"
    wheels.mkdir(parents=True)
    step(f"building wheels for homewatt[gpio] {version} with {python}")
    started = time.monotonic()
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = staging.parent / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SOURCE_SKIP))
    run(python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
        "--wheel-dir", wheels, f"{source}[gpio]")
    step(f"  {len(list(wheels.glob('*.whl')))} wheels in {time.monotonic() - started:.0f} s")
    script = (HERE / "debian" / "homewatt-setup-venv").read_text().replace("@VERSION@",
                                                                           version)
    (opt / "bin").mkdir()
    (opt / "bin" / "homewatt-setup-venv").write_text(script)
    (opt / "bin" / "homewatt-setup-venv").chmod(0o755)
    install(HERE / "agent.toml", opt / "share" / "agent.toml", 0o644)
    install(ROOT / "docs" / "installer.md", opt / "share" / "doc" / "installer.md", 0o644)
    install(HERE / "systemd" / "homewatt-agent.service",
            staging / "lib" / "systemd" / "system" / "homewatt-agent.service", 0o644)
    doc = staging / "usr" / "share" / "doc" / "homewatt"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT.format(license=license_name))
    (staging / "usr" / "bin").mkdir(parents=True)
    os.symlink("/opt/homewatt/venv/bin/homewatt-agent", staging / "usr" / "bin" /
               "homewatt-agent")
    debian = staging / "DEBIAN"
    debian.mkdir()
    for name in ("postinst", "prerm", "postrm"):
        install(HERE / "debian" / name, debian / name, 0o755)


def write_control(staging: Path, version: str, arch: str, py: tuple[int, int]) -> None:
    files = [p for p in staging.rglob("*") if p.is_file() and not p.is_symlink()
             and "DEBIAN" not in p.relative_to(staging).parts]
    size_kib = sum(p.stat().st_size for p in files) // 1024 + 1
    sums = "".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  "  # noqa: S324 - dpkg's format
                   f"{p.relative_to(staging)}\n" for p in sorted(files))
    (staging / "DEBIAN" / "md5sums").write_text(sums)
    (staging / "DEBIAN" / "control").write_text(CONTROL.format(
        version=version, arch=arch, size_kib=size_kib, py=f"{py[0]}.{py[1]}",
        py_next=f"{py[0]}.{py[1] + 1}"))


def build(out: Path, python: str) -> Path:
    if shutil.which("dpkg-deb") is None:
        raise BuildError("dpkg-deb not found: sudo apt-get install dpkg")
    version, license_name = project()
    arch = run("dpkg", "--print-architecture").strip()
    py = python_minor(python)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="homewatt-deb-") as scratch:
        staging = Path(scratch) / "root"
        stage(staging, version, license_name, python)
        write_control(staging, version, arch, py)
        target = out / f"homewatt_{version}_{arch}.deb"
        step(f"packing {target.name}")
        # The wheels are zip files already: recompressing them gains nothing, fast gzip.
        run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", staging, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build_deb.py", description=__doc__.split("\n\n")[0] + " The package installs "
        "to /opt/homewatt with its own venv, config in /etc/homewatt, data in /var/lib/homewatt.")
    parser.add_argument("--out", type=Path, default=ROOT / "dist",
                        help="directory for the .deb (default %(default)s)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter whose pip builds the wheels; its minor version must "
                             "be the target's python3 (default: this one)")
    args = parser.parse_args(argv)
    try:
        target = build(args.out, args.python)
    except BuildError as exc:
        print(f"build_deb.py: {exc}", file=sys.stderr)
        return EXIT_FAILED
    step(f"built {target} ({target.stat().st_size // 1024} KiB)")
    print(target)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
