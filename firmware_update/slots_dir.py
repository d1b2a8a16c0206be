"""``DirectorySlots``: A/B slots for the agent's own software as two directories and a symlink.

Layout under ``root`` (e.g. ``/opt/homewatt``)::

    slots/a/  slots/b/          two complete software trees
    slots/a.json  slots/b.json  {"version": ...}, written only once a tree is complete
    current -> slots/a          what the service runs (systemd starts current/bin/...)

``install`` unpacks into ``slots/<x>.tmp``, fsyncs every file, and renames it into place, so a
slot is either absent or complete. ``activate`` swaps ``current`` with one atomic rename. The
*booted* slot is the one ``current`` pointed at when this object was created (the process's
start); after ``activate`` the new slot is primary until the next restart runs it.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from firmware_update.durable import fsync_dir, fsync_tree, read_json, symlink_atomic, write_json
from firmware_update.errors import SlotError
from firmware_update.manifest import Manifest, PayloadKind

__all__ = ["DirectorySlots"]

SLOTS = ("a", "b")


class DirectorySlots:
    kind: PayloadKind = "app"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.slots_dir = root / "slots"
        self.current = root / "current"
        self._booted = self._resolve()

    # -- set-up ------------------------------------------------------------------------------

    @classmethod
    def initialize(cls, root: Path, tree: Path, version: str) -> DirectorySlots:
        """First install (packaging, tests): ``tree`` becomes slot ``a``, running ``version``."""
        (root / "slots").mkdir(parents=True, exist_ok=True)
        target = root / "slots" / "a"
        if not target.exists():
            shutil.copytree(tree, target, symlinks=True)
            fsync_tree(target)
        write_json(root / "slots" / "a.json", {"version": version})
        symlink_atomic(root / "current", "slots/a")
        return cls(root)

    def _resolve(self) -> str:
        try:
            target = self.current.readlink()
        except OSError as exc:
            raise SlotError(f"{self.current}: not a slot symlink ({exc}); initialise the "
                            "slots first") from exc
        name = target.name
        if name not in SLOTS:
            raise SlotError(f"{self.current} points at {target}, not slots/a or slots/b")
        return name

    # -- SlotBackend ---------------------------------------------------------------------------

    def booted(self) -> str:
        return self._booted

    def primary(self) -> str:
        return self._resolve()

    def other(self, slot: str) -> str:
        return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]

    def slot_version(self, slot: str) -> str | None:
        meta = read_json(self.slots_dir / f"{slot}.json")
        return meta.get("version") if isinstance(meta, dict) else None

    def slot_path(self, slot: str) -> Path:
        return self.slots_dir / slot

    def install(self, payload: Path, manifest: Manifest) -> str:
        target = self.other(self._booted)
        if self.primary() == target:
            raise SlotError(f"slot {target} is primary; refusing to overwrite what runs next")
        staging = self.slots_dir / f"{target}.tmp"
        live = self.slots_dir / target
        shutil.rmtree(staging, ignore_errors=True)
        (self.slots_dir / f"{target}.json").unlink(missing_ok=True)
        try:
            with tarfile.open(payload, "r:*") as tar:
                tar.extractall(staging, filter="data")  # no absolute paths, .., devices
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise SlotError(f"unpacking into slot {target} failed: {exc}") from exc
        fsync_tree(staging)
        shutil.rmtree(live, ignore_errors=True)
        staging.rename(live)
        fsync_dir(self.slots_dir)
        write_json(self.slots_dir / f"{target}.json", {"version": manifest.version})
        return target

    def activate(self, slot: str) -> None:
        if self.slot_version(slot) is None:
            raise SlotError(f"slot {slot} holds no complete install; cannot activate it")
        symlink_atomic(self.current, f"slots/{slot}")

    def mark_good(self) -> None:
        """Nothing to record here: the updater's state file holds the commit."""

    def mark_bad(self, slot: str) -> None:
        if self._resolve() == slot:
            symlink_atomic(self.current, f"slots/{self.other(slot)}")
