"""A gateway's updater as its own process, for the SIGKILL tests.

``python -m tests.fw_kill_driver BASE [--kill-at N]``: builds the updater from the files in
BASE (``root.json``, ``offer.json``, ``app/`` slots, ``state/``), runs what a starting agent
runs (``resume``, then ``apply`` of the offered job if the cloud has no final word yet), and
prints ``CP <n> <name>`` at every checkpoint: each durable rename, each state save, each slot
tree fsync, and points one third and two thirds into the download. With ``--kill-at N`` it
prints ``KILLME`` at checkpoint N and waits to be SIGKILLed. A restart request prints
``RESTART`` and exits 75 (systemd would start the service again); the end prints ``DONE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

import firmware_update.durable as durable
import firmware_update.slots_dir as slots_dir
from firmware_update.download import PayloadDownloader
from firmware_update.envelope import Envelope
from firmware_update.fakes import FakeClock
from firmware_update.ports import HealthReport
from firmware_update.slots_dir import DirectorySlots
from firmware_update.state import StateStore
from firmware_update.trust import load_initial_root
from firmware_update.updater import DeviceIdentity, DeviceUpdater, JobOffer, UpdaterSettings

EXIT_RESTART = 75


class Checkpoints:
    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.count = 0

    def hit(self, name: str) -> None:
        self.count += 1
        print(f"CP {self.count} {name}", flush=True)
        if self.count == self.kill_at:
            print("KILLME", flush=True)
            time.sleep(3600)


def instrument(cp: Checkpoints) -> None:
    real_replace = os.replace
    real_fsync_tree = slots_dir.fsync_tree
    real_save = StateStore.save

    def replace(src: Any, dst: Any) -> None:
        cp.hit(f"before rename to {Path(dst).name}")
        real_replace(src, dst)

    def fsync_tree(root: Path) -> None:
        real_fsync_tree(root)
        cp.hit(f"slot tree {root.name} synced")

    def save(self: StateStore, state: Any) -> None:
        real_save(self, state)
        cp.hit(f"state saved: {state.phase.value}")
    durable.os.replace = replace  # type: ignore[assignment]
    slots_dir.fsync_tree = fsync_tree
    StateStore.save = save  # type: ignore[method-assign]


class FileReporter:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def report(self, job_id: str, status: str, details: dict[str, str]) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps({"job": job_id, "status": status, "details": details}) + "\n")
            out.flush()
            os.fsync(out.fileno())


class ExitRestarter:
    async def restart(self, reason: str) -> None:
        print(f"RESTART {reason}", flush=True)
        os._exit(EXIT_RESTART)


class MarkerHealth:
    def __init__(self, app: Path) -> None:
        self.app = app

    async def check(self) -> HealthReport:
        marker = (self.app / "current" / "HEALTH").read_text().strip()
        return HealthReport() if marker == "ok" else HealthReport({"meters": "none read"})


def final_reported(reports: Path, job_id: str) -> bool:
    if not reports.exists():
        return False
    return any(r["job"] == job_id and r["status"] != "IN_PROGRESS"
               for r in map(json.loads, reports.read_text().splitlines()))


async def main(base: Path, cp: Checkpoints) -> None:
    offer_data = json.loads((base / "offer.json").read_text())
    offer = JobOffer(offer_data["job_id"], offer_data["manifest"].encode(), offer_data["url"])
    clock = FakeClock(offer_data["now_ms"])
    with httpx.Client(timeout=10) as client:
        downloader = PayloadDownloader(client, attempts=3, backoff_s=0, free_margin=0,
                                       sync_every=64 * 1024)
        real_fetch = downloader.fetch

        def fetch(url: str, dest: Path, size: int, sha256: str, progress: Any = None) -> None:
            marks = [size // 3, 2 * size // 3]

            def on_progress(done: int, total: int) -> None:
                while marks and done >= marks[0]:
                    cp.hit(f"download at {marks.pop(0)} of {total}")
            real_fetch(url, dest, size, sha256, on_progress)
        downloader.fetch = fetch  # type: ignore[method-assign]
        updater = DeviceUpdater(
            store=StateStore(base / "state"), slots=DirectorySlots(base / "app"),
            root=load_initial_root(Envelope.from_bytes((base / "root.json").read_bytes())),
            identity=DeviceIdentity("homewatt-agent", "rpi4"), health=MarkerHealth(base / "app"),
            reporter=FileReporter(base / "reports.jsonl"), restarter=ExitRestarter(),
            downloader=downloader, clock=clock,
            settings=UpdaterSettings(trial_boots=2, health_deadline_s=20, health_interval_s=5))
        await updater.resume()
        if not final_reported(base / "reports.jsonl", offer.job_id):
            await updater.apply(offer)
        print(f"DONE {updater.phase.value}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("base", type=Path)
    parser.add_argument("--kill-at", type=int)
    args = parser.parse_args()
    checkpoints = Checkpoints(args.kill_at)
    instrument(checkpoints)
    asyncio.run(main(args.base, checkpoints))
    sys.exit(0)
