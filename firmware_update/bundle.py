"""Building bundles: a payload file plus its unsigned manifest envelope.

A directory payload (the agent's own software for the directory/symlink slots) is packed as a
reproducible tar: sorted names, mtime 0, uid/gid 0, no devices, so the same tree always hashes
the same. A file payload (e.g. a ``.raucb``) is copied as is.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firmware_update.envelope import MANIFEST_TYPE, Envelope
from firmware_update.errors import BadInput
from firmware_update.manifest import Manifest, PayloadInfo, PayloadKind

__all__ = ["BuiltBundle", "build_bundle", "hash_file"]

CHUNK = 1024 * 1024
Progress = Callable[[int, int], None]  # (bytes done, total)


@dataclass(frozen=True)
class BuiltBundle:
    manifest: Manifest
    manifest_path: Path
    payload_path: Path


def hash_file(path: Path, progress: Progress | None = None) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file, reading it once in 1 MiB chunks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return done, digest.hexdigest()


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if not (info.isfile() or info.isdir() or info.issym()):
        return None  # devices, fifos: never part of an app payload
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_directory(source: Path, target: Path) -> None:
    """Reproducible tar of ``source``'s contents (paths relative to it)."""
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(source)), recursive=False, filter=_reset)


def build_bundle(*, name: str, version: str, kind: PayloadKind, hardware: list[str],
                 payload: Path, out_dir: Path, expires_in: timedelta,
                 min_version: str | None = None, allow_downgrade: bool = False,
                 description: str = "", now: datetime | None = None,
                 progress: Progress | None = None) -> BuiltBundle:
    """Write ``<name>-<version>.payload`` and ``<name>-<version>.manifest.json`` (unsigned)
    into ``out_dir``; raises ``BadInput`` for a missing payload or invalid field."""
    if not payload.exists():
        raise BadInput(f"--payload {payload}: no such file or directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{version}"
    payload_path = out_dir / f"{stem}.payload"
    manifest_path = out_dir / f"{stem}.manifest.json"
    if payload.is_dir():
        pack_directory(payload, payload_path)
    else:
        shutil.copyfile(payload, payload_path)
    size, digest = hash_file(payload_path, progress)
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    try:
        manifest = Manifest(name=name, version=version, kind=kind,
                            compatible_hardware=hardware,
                            payload=PayloadInfo(size=size, sha256=digest), created=created,
                            expires=created + expires_in, min_version=min_version,
                            allow_downgrade=allow_downgrade, description=description)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        payload_path.unlink(missing_ok=True)
        raise BadInput(f"manifest: {exc}") from exc
    manifest_path.write_bytes(Envelope(MANIFEST_TYPE, manifest.to_bytes()).to_bytes())
    return BuiltBundle(manifest, manifest_path, payload_path)
