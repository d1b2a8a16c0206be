"""``RaucSlots``: full-image A/B updates through RAUC's command-line tool.

RAUC (https://rauc.io) owns the slots and the bootloader integration (U-Boot, GRUB, barebox
or EFI boot counting); this adapter drives the ``rauc`` CLI, found on ``PATH``:

- ``rauc status --detailed --output-format=json``: the booted slot is the one whose
  ``state`` is ``"booted"`` (the top-level ``booted`` field is a bootname, not a slot name),
  ``boot_primary`` the slot the bootloader tries next, ``slot_status.bundle.version`` what
  each slot holds;
- ``rauc install BUNDLE``: writes the inactive slot and makes it primary (a trial: the
  bootloader counts attempts and falls back when they run out);
- ``rauc status mark-good booted`` commits; ``rauc status mark-bad SLOT`` plus
  ``mark-active OTHER`` rolls back.

Only slots of one class (``rootfs`` by default) are considered. The D-Bus API
(``de.pengutronix.rauc.Installer``) offers the same operations; the CLI is used because it
needs no D-Bus bindings and behaves the same from a shell, which keeps field debugging simple.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from firmware_update.errors import SlotError
from firmware_update.manifest import Manifest, PayloadKind

__all__ = ["RaucSlots"]

INSTALL_TIMEOUT_S = 1800.0
STATUS_TIMEOUT_S = 30.0


class RaucSlots:
    kind: PayloadKind = "rauc"

    def __init__(self, *, slot_class: str = "rootfs", rauc: str = "rauc") -> None:
        self.slot_class = slot_class
        self.rauc = rauc

    def _run(self, *args: str, timeout: float = STATUS_TIMEOUT_S) -> str:
        try:
            done = subprocess.run([self.rauc, *args], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except FileNotFoundError as exc:
            raise SlotError(f"{self.rauc}: not found on PATH; install RAUC or use the "
                            "directory slot backend") from exc
        except subprocess.TimeoutExpired as exc:
            raise SlotError(f"rauc {' '.join(args)} timed out after {timeout:.0f}s") from exc
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise SlotError(f"rauc {' '.join(args)} failed ({done.returncode}): "
                            f"{message[-1] if message else 'no output'}")
        return done.stdout

    def _status(self) -> dict[str, Any]:
        raw = self._run("status", "--detailed", "--output-format=json")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SlotError(f"rauc status printed no JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SlotError("rauc status: expected a JSON object")
        return data

    def _slots(self, status: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in status.get("slots", []):
            for name, slot in entry.items():
                if isinstance(slot, dict) and slot.get("class") == self.slot_class:
                    out[name] = slot
        if len(out) != 2:
            raise SlotError(f"rauc reports {len(out)} {self.slot_class} slots; A/B needs 2")
        return out

    def booted(self) -> str:
        for name, slot in self._slots(self._status()).items():
            if slot.get("state") == "booted":
                return name
        raise SlotError(f"rauc reports no booted {self.slot_class} slot")

    def primary(self) -> str:
        status = self._status()
        primary = status.get("boot_primary")
        if primary not in self._slots(status):
            raise SlotError(f"rauc boot_primary {primary!r} is not a {self.slot_class} slot")
        return str(primary)

    def other(self, slot: str) -> str:
        names = sorted(self._slots(self._status()))
        return names[1] if slot == names[0] else names[0]

    def slot_version(self, slot: str) -> str | None:
        info = self._slots(self._status()).get(slot, {})
        bundle = (info.get("slot_status") or {}).get("bundle") or {}
        version = bundle.get("version")
        return str(version) if version else None

    def install(self, payload: Path, manifest: Manifest) -> str:
        booted = self.booted()
        self._run("install", str(payload), timeout=INSTALL_TIMEOUT_S)
        target = self.other(booted)
        if self.slot_version(target) != manifest.version:
            raise SlotError(f"rauc installed into {target} but it reports version "
                            f"{self.slot_version(target)!r}, not {manifest.version}: the RAUC "
                            "bundle's version differs from the signed manifest's")
        return target

    def activate(self, slot: str) -> None:
        self._run("status", "mark-active", slot)

    def mark_good(self) -> None:
        self._run("status", "mark-good", "booted")

    def mark_bad(self, slot: str) -> None:
        self._run("status", "mark-bad", slot)
        self._run("status", "mark-active", self.other(slot))
