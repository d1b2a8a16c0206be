"""SIGKILL in every updater state ends with a working slot.

The updater runs as its own process (``tests/fw_kill_driver.py``) against real directory
slots and a real HTTP server. A first run counts the checkpoints of the whole update (every
durable rename, state save, slot fsync, and two points inside the download); then, for each
checkpoint, a fresh gateway is SIGKILLed there, checked for a runnable slot at that instant,
and restarted until the update settles. Success flow: always ends on 1.1.0, SUCCEEDED. Failing
health check (killed at every checkpoint after the switch, where it differs): always ends
back on 1.0.0, FAILED with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from firmware_update.slots_dir import DirectorySlots
from tests.fw_helpers import NOW, app_tree, make_signer, signed_bundle
from tests.fw_http import file_app, run_asgi

pytestmark = pytest.mark.chaos
REPO = Path(__file__).resolve().parents[2]
MAX_STARTS = 8


def make_world(base: Path, release: Path, port: int, payload_name: str, manifest: bytes,
               root_envelope: bytes) -> None:
    base.mkdir(parents=True)
    DirectorySlots.initialize(base / "app", app_tree(base / "factory", "1.0.0"), "1.0.0")
    (base / "root.json").write_bytes(root_envelope)
    (base / "offer.json").write_text(json.dumps({
        "job_id": "job-1", "manifest": manifest.decode(),
        "url": f"http://127.0.0.1:{port}/files/{payload_name}",
        "now_ms": int(NOW.timestamp() * 1000)}))


def run_driver(base: Path, kill_at: int | None = None) -> tuple[int, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fw_kill_driver", str(base),
                             *([] if kill_at is None else ["--kill-at", str(kill_at)])],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "KILLME":
            proc.send_signal(signal.SIGKILL)
            break
    proc.stdout.close()
    return proc.wait(30), lines


def assert_runnable(base: Path) -> str:
    """What systemd would start now: ``current`` names a complete slot; its version."""
    current = base / "app" / "current"
    slot = os.readlink(current).rsplit("/", 1)[-1]
    meta = json.loads((base / "app" / "slots" / f"{slot}.json").read_text())
    version = (current / "VERSION").read_text().strip()
    assert version == meta["version"], f"slot {slot} is not the version it claims"
    assert (current / "lib" / "agent.py").read_text().startswith(f"VERSION = {version!r}")
    return version


def settle(base: Path) -> list[str]:
    """Restart the gateway until its updater reports DONE; returns every output line."""
    out: list[str] = []
    for _ in range(MAX_STARTS):
        code, lines = run_driver(base)
        out += lines
        if code == 0:
            return out
        assert code == 75, f"driver failed ({code}): {lines[-5:]}"
        assert_runnable(base)
    raise AssertionError(f"no DONE after {MAX_STARTS} starts: {out[-10:]}")


def finals(base: Path) -> list[dict[str, object]]:
    reports = [json.loads(x) for x in (base / "reports.jsonl").read_text().splitlines()]
    return [r for r in reports if r["status"] != "IN_PROGRESS"]


def sweep(tmp_path: Path, health: str, *, after_switch: bool = False,
          ) -> tuple[int, list[tuple[int, str, str, str]]]:
    """Kill at every checkpoint (``after_switch``: only those after the first restart, the
    part where a failing update differs from a good one)."""
    ks, root = make_signer()
    root_env = root.envelope()
    root_env.sign(ks[0])
    built = signed_bundle(tmp_path / "release", ks, "1.1.0", health=health,
                          expires_in=timedelta(days=30))
    results: list[tuple[int, str, str, str]] = []
    with run_asgi(file_app(built.payload_path.parent)) as port:
        def world(name: str) -> Path:
            base = tmp_path / name
            make_world(base, tmp_path / "release", port, built.payload_path.name,
                       built.manifest_path.read_bytes(), root_env.to_bytes())
            return base
        probe = world("count")
        lines = settle(probe)
        checkpoints = [x for x in lines if x.startswith("CP ")]
        total = len(checkpoints)
        assert total >= 15, checkpoints
        first = 1
        if after_switch:
            first = 1 + sum(1 for x in lines[:lines.index(next(
                x for x in lines if x.startswith("RESTART")))] if x.startswith("CP "))
        for n in range(first, total + 1):
            base = world(f"kill-{n}")
            # checkpoint numbers count across restarts: kill the n-th one wherever it falls
            killed = kill_nth(base, n)
            assert_runnable(base)  # the instant after the kill, a working slot is in place
            settle(base)
            version = assert_runnable(base)
            [final] = {json.dumps(f, sort_keys=True) for f in finals(base)}
            record = json.loads(final)
            results.append((n, killed, version, f"{record['status']}:"
                                                f"{record['details']['reason']}"))
            assert json.loads((base / "state" / "state.json").read_text())["phase"] == "idle"
    return total - first + 1, results


def kill_nth(base: Path, n: int) -> str:
    """Run starts until the n-th checkpoint overall, SIGKILL there; returns its name."""
    seen = 0
    for _ in range(MAX_STARTS):
        code, lines = run_driver(base, kill_at=n - seen)
        cps = [x for x in lines if x.startswith("CP ")]
        if lines and lines[-1] == "KILLME":
            return cps[-1].split(" ", 2)[2]
        assert code == 75, f"driver ended ({code}) before checkpoint {n}: {lines[-3:]}"
        seen += len(cps)
    raise AssertionError(f"checkpoint {n} never reached")


def test_sigkill_in_every_state_of_a_good_update_ends_committed(tmp_path: Path) -> None:
    total, results = sweep(tmp_path, "ok")
    assert len(results) == total
    for n, killed, version, final in results:
        assert (version, final) == ("1.1.0", "SUCCEEDED:committed"), (n, killed)


def test_sigkill_in_every_state_of_a_failing_update_ends_rolled_back(tmp_path: Path) -> None:
    total, results = sweep(tmp_path, "broken", after_switch=True)
    assert len(results) == total
    for n, killed, version, final in results:
        assert version == "1.0.0", (n, killed)
        # killed during a trial start counts as a failed start: either reason is the truth
        assert final in ("FAILED:health_check", "FAILED:trial_boots"), (n, killed, final)
