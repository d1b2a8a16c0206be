"""Shared helpers for the firmware tests: keys, roots and signed bundles in a temp dir."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firmware_update import keys
from firmware_update.bundle import BuiltBundle, build_bundle
from firmware_update.envelope import Envelope
from firmware_update.keys import SigningKey
from firmware_update.trust import TrustRoot

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@dataclass
class Signer:
    key: SigningKey
    root: TrustRoot


def make_signer(threshold: int = 1, extra: int = 0) -> tuple[list[SigningKey], TrustRoot]:
    ks = [keys.generate() for _ in range(max(threshold, 1) + extra)]
    return ks, TrustRoot.of([k.public for k in ks], threshold)


def app_tree(root: Path, version: str, *, health: str = "ok") -> Path:
    """A fake agent software tree: VERSION, a health marker and some bytes."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "VERSION").write_text(version + "\n")
    (root / "HEALTH").write_text(health + "\n")
    (root / "lib").mkdir(exist_ok=True)
    (root / "lib" / "agent.py").write_text(f"VERSION = {version!r}\n" + "# pad\n" * 2000)
    return root


def signed_bundle(tmp: Path, signer_keys: list[SigningKey], version: str = "1.1.0", *,
                  hardware: tuple[str, ...] = ("rpi4",), expires_in: timedelta = timedelta(days=30),
                  created: datetime = NOW, health: str = "ok", **extra: object) -> BuiltBundle:
    tree = app_tree(tmp / f"tree-{version}-{health}", version, health=health)
    built = build_bundle(name="homewatt-agent", version=version, kind="app",
                         hardware=list(hardware), payload=tree, out_dir=tmp / "dist",
                         expires_in=expires_in, now=created, **extra)  # type: ignore[arg-type]
    envelope = Envelope.from_bytes(built.manifest_path.read_bytes())
    for key in signer_keys:
        envelope.sign(key)
    built.manifest_path.write_bytes(envelope.to_bytes())
    return built


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
