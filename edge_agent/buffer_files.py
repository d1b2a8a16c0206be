"""File-level helpers of the telemetry buffer: the seq floor side file, the writer lock, and
moving a corrupt database aside.

The seq floor (``<name>.seqfloor``) is a tiny text file holding one integer: a ceiling that
no assigned seq has passed. The buffer raises it (write to a temp file, fsync, rename, fsync the
directory) *before* it commits any seq above it, so even when the database file is lost or
corrupt, starting above the floor can never reuse a seq the cloud may already hold.
"""

from __future__ import annotations

import fcntl
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def seqfloor_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".seqfloor")


def read_seqfloor(db_path: Path) -> int:
    """The persisted ceiling, or 0 if the file is missing; an unreadable file logs and gives 0."""
    path = seqfloor_path(db_path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        logger.error("cannot read seq floor file %s (%s); relying on the database alone", path, exc)
        return 0
    if not text.isdigit():
        logger.error("seq floor file %s holds %r, not a number; ignoring it", path, text[:40])
        return 0
    return int(text)


def write_seqfloor(db_path: Path, value: int) -> None:
    """Durably replace the floor: temp file, fsync, atomic rename, fsync of the directory."""
    path = seqfloor_path(db_path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{value}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriterLock:
    """An exclusive ``flock`` on ``<name>.lock``: one writer process per buffer file.

    The buffer keeps ``last_seq`` and ``depth`` in memory, which is only right when no other
    process writes the same file. The kernel releases the lock when the process dies, SIGKILL
    included, so a crash never leaves a stale lock behind.
    """

    def __init__(self, db_path: Path) -> None:
        self._path = db_path.with_name(db_path.name + ".lock")
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        handle = self._path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def move_aside(db_path: Path, now_ms: int) -> Path:
    """Rename a corrupt database and its -wal/-shm to ``<name>.corrupt-<UTC timestamp>[-wal]``.

    The side files keep SQLite's naming so the moved copy can still be opened for forensics.
    Returns the new path of the main file.
    """
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}.{counter}")
    os.replace(db_path, target)
    for suffix in SQLITE_SIDE_SUFFIXES:
        side = db_path.with_name(db_path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    _fsync_dir(db_path.parent)
    return target
