"""Shared helpers for the firmware tests: keys, roots and signed bundles in a temp dir."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from firmware_update import keys
from firmware_update.bundle import BuiltBundle, build_bundle
from firmware_update.download import PayloadDownloader
from firmware_update.envelope import Envelope
from firmware_update.fakes import FakeClock, FakeHealthProbe, FakeJobReporter, FakeRestarter
from firmware_update.keys import SigningKey
from firmware_update.ports import HealthReport
from firmware_update.slots_dir import DirectorySlots
from firmware_update.state import StateStore
from firmware_update.trust import TrustRoot
from firmware_update.updater import DeviceIdentity, DeviceUpdater, UpdaterSettings

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


class Gateway:
    """One simulated gateway's updater world: directory slots, state, fakes, an HTTP client.

    ``restart()`` builds a fresh updater from disk, the way a process restart would.
    """

    def __init__(self, base: Path, root: TrustRoot, client: httpx.Client, *, version: str = "1.0.0",
                 healthy: bool = True, hardware: str = "rpi4") -> None:
        self.base = base
        self.root = root
        self.client = client
        self.hardware = hardware
        self.clock = FakeClock(int(NOW.timestamp() * 1000))
        self.reporter = FakeJobReporter()
        self.restarter = FakeRestarter()
        self.healthy = healthy
        self.health = FakeHealthProbe(lambda: HealthReport() if self._slot_healthy()
                                      else HealthReport({"meters": "no meter answered"}))
        DirectorySlots.initialize(base / "app", app_tree(base / "factory", version), version)
        self.updater = self._build()

    def _slot_healthy(self) -> bool:
        # the new version's own health marker decides, as a real health check would
        current = (self.base / "app" / "current" / "HEALTH").read_text().strip()
        return self.healthy and current == "ok"

    def _build(self) -> DeviceUpdater:
        return DeviceUpdater(
            store=StateStore(self.base / "state"), slots=DirectorySlots(self.base / "app"),
            root=self.root, identity=DeviceIdentity("homewatt-agent", self.hardware),
            health=self.health, reporter=self.reporter, restarter=self.restarter,
            downloader=PayloadDownloader(self.client, attempts=3, backoff_s=0,
                                         free_margin=0, sleep=lambda _s: None),
            clock=self.clock, settings=UpdaterSettings(trial_boots=2, health_deadline_s=30,
                                                       health_interval_s=5))

    def restart(self) -> DeviceUpdater:
        self.updater = self._build()
        return self.updater

    def running_version(self) -> str:
        return (self.base / "app" / "current" / "VERSION").read_text().strip()
