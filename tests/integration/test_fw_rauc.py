"""``RaucSlots`` drives the ``rauc`` CLI: a fake ``rauc`` on PATH (tests/fakes/rauc) keeps
RAUC's JSON status format and the bootloader's attempt counting. The same updater that runs
the directory slots commits a healthy image and rolls a failing one back."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from firmware_update.download import PayloadDownloader
from firmware_update.envelope import MANIFEST_TYPE, Envelope
from firmware_update.errors import SlotError
from firmware_update.fakes import FakeClock, FakeHealthProbe, FakeJobReporter, FakeRestarter
from firmware_update.manifest import Manifest, PayloadInfo
from firmware_update.ports import HealthReport
from firmware_update.slots_rauc import RaucSlots
from firmware_update.state import Phase, StateStore
from firmware_update.updater import DeviceIdentity, DeviceUpdater, JobOffer, UpdaterSettings
from tests.fw_helpers import NOW, make_signer

pytestmark = pytest.mark.integration
FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def rauc_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "rauc-state.json"
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_RAUC_STATE", str(state))
    return state


def rauc_bundle(tmp_path: Path, version: str) -> tuple[bytes, bytes, list[object]]:
    ks, root = make_signer()
    image = f"{version}\n".encode() + b"\0" * 4096  # the fake reads the version line
    manifest = Manifest(name="homewatt-os", version=version, kind="rauc",
                        compatible_hardware=["rpi4"],
                        payload=PayloadInfo(size=len(image),
                                            sha256=hashlib.sha256(image).hexdigest()),
                        created=NOW, expires=NOW + timedelta(days=30))
    env = Envelope(MANIFEST_TYPE, manifest.to_bytes())
    env.sign(ks[0])
    return env.to_bytes(), image, [root]


def updater(tmp_path: Path, root: object, image: bytes, healthy: bool,
            reporter: FakeJobReporter, restarter: FakeRestarter) -> DeviceUpdater:
    client = httpx.Client(transport=httpx.MockTransport(
        lambda _r: httpx.Response(200, content=image, headers={"ETag": '"i"'})))
    return DeviceUpdater(
        store=StateStore(tmp_path / "state"), slots=RaucSlots(), root=root,  # type: ignore[arg-type]
        identity=DeviceIdentity("homewatt-os", "rpi4"),
        health=FakeHealthProbe(lambda: HealthReport() if healthy
                               else HealthReport({"cloud": "unreachable"})),
        reporter=reporter, restarter=restarter,
        downloader=PayloadDownloader(client, free_margin=0), clock=FakeClock(
            int(NOW.timestamp() * 1000)),
        settings=UpdaterSettings(trial_boots=2, health_deadline_s=10, health_interval_s=5))


def boot() -> None:
    """Power cycle: the fake bootloader picks the slot."""
    subprocess.run(["rauc", "fake-boot"], check=True)


@pytest.mark.parametrize("healthy", [True, False])
async def test_rauc_image_commits_or_rolls_back(tmp_path: Path, rauc_env: Path,
                                                healthy: bool) -> None:
    manifest, image, (root,) = rauc_bundle(tmp_path, "2.0.0")
    reporter, restarter = FakeJobReporter(), FakeRestarter()
    first = updater(tmp_path, root, image, healthy, reporter, restarter)
    assert first.installed_version == "1.0.0"
    assert await first.apply(JobOffer("job-os", manifest, "http://cloud/os")) is Phase.TRIAL
    state = json.loads(rauc_env.read_text())
    assert state["primary"] == "rootfs.1" and state["versions"]["rootfs.1"] == "2.0.0"
    boot()  # the reboot the restarter asked for
    await updater(tmp_path, root, image, healthy, reporter, restarter).resume()
    if not healthy:
        state = json.loads(rauc_env.read_text())
        assert ["status", "mark-bad", "rootfs.1"] in state["log"]
        assert state["primary"] == "rootfs.0"
        boot()
        await updater(tmp_path, root, image, healthy, reporter, restarter).resume()
    state = json.loads(rauc_env.read_text())
    [(_job, status, details)] = reporter.final()
    if healthy:
        assert status == "SUCCEEDED" and state["booted"] == "rootfs.1"
        assert state["good"]["rootfs.1"] is True
    else:
        assert (status, details["reason"]) == ("FAILED", "health_check")
        assert state["booted"] == "rootfs.0" and "cloud: unreachable" in details["detail"]


async def test_bootloader_fallback_is_reported_as_never_started(tmp_path: Path,
                                                                rauc_env: Path) -> None:
    manifest, image, (root,) = rauc_bundle(tmp_path, "2.0.0")
    reporter, restarter = FakeJobReporter(), FakeRestarter()
    await updater(tmp_path, root, image, True, reporter, restarter).apply(
        JobOffer("job-os", manifest, "http://cloud/os"))
    state = json.loads(rauc_env.read_text())
    state["attempts"]["rootfs.1"] = 0  # the new kernel never came up: attempts spent
    rauc_env.write_text(json.dumps(state))
    boot()
    await updater(tmp_path, root, image, True, reporter, restarter).resume()
    [(_job, status, details)] = reporter.final()
    assert (status, details["reason"]) == ("FAILED", "did_not_start")


def test_rauc_failure_is_a_slot_error_naming_the_command(rauc_env: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_RAUC_FAIL", "install")
    (tmp_path / "b.raucb").write_text("2.0.0\n")
    slots = RaucSlots()
    manifest = Manifest(name="homewatt-os", version="2.0.0", kind="rauc",
                        compatible_hardware=["rpi4"],
                        payload=PayloadInfo(size=6, sha256="0" * 64),
                        created=NOW, expires=NOW + timedelta(days=1))
    with pytest.raises(SlotError, match=r"rauc install .* failed .*no space left"):
        slots.install(tmp_path / "b.raucb", manifest)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SlotError, match="not found on PATH"):
        RaucSlots().booted()
