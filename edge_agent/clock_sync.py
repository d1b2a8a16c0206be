"""Is the system clock synced? Adapters of :class:`edge_agent.ports.ClockSync`, and the boot id.

On Linux two sources answer without any network traffic:

- the kernel's NTP state from ``adjtimex(2)`` called read-only (``modes = 0``): the
  ``STA_UNSYNC`` status bit stays set until a time daemon (systemd-timesyncd, chrony with
  ``rtcsync``, ntpd) has disciplined the clock;
- systemd-timesyncd's flag file ``/run/systemd/timesync/synchronized``, created once it has
  synced (also readable where seccomp forbids ``adjtimex``, e.g. under ``ProtectClock=``).

:class:`LinuxClockSync` says synced when either does. :class:`FakeClockSync` answers from a
function (tests), :class:`AssumeSynced` always says yes (``clock.sync = "none"``: hosts with a
real-time clock, containers, development machines).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["AssumeSynced", "FakeClockSync", "LinuxClockSync", "adjtimex_synced", "read_boot_id"]

log = logging.getLogger(__name__)

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
STA_UNSYNC = 0x0040  # <linux/timex.h>: clock not synchronized


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """``struct timex`` of <sys/timex.h> (glibc's ``adjtimex`` symbol: ``long`` fields)."""

    _fields_ = (
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        # 11 reserved ints in the kernel's struct, and spare room in case a kernel grows it.
        ("_reserved", ctypes.c_int * 32),
    )


def status_synced(status: int) -> bool:
    """Pure: the kernel considers the clock synced when ``STA_UNSYNC`` is clear."""
    return not status & STA_UNSYNC


def adjtimex_synced() -> bool | None:
    """The kernel's view via a read-only ``adjtimex``; None when it cannot be asked (no libc,
    or seccomp/EPERM)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    tx = _Timex()  # modes = 0: read only, changes nothing
    if libc.adjtimex(ctypes.byref(tx)) == -1:
        log.debug("adjtimex failed: errno %d", ctypes.get_errno())
        return None
    return status_synced(tx.status)


class LinuxClockSync:
    """Synced when timesyncd's flag file exists or the kernel's ``STA_UNSYNC`` is clear."""

    def __init__(self, *, flag_file: Path = TIMESYNCD_FLAG, use_adjtimex: bool = True) -> None:
        self.flag_file = flag_file
        self.use_adjtimex = use_adjtimex

    def synced(self) -> bool:
        if self.flag_file.exists():
            return True
        return bool(self.use_adjtimex and adjtimex_synced())

    def describe(self) -> str:
        """Where the answer came from, for ``doctor`` and the logs."""
        if self.flag_file.exists():
            return f"systemd-timesyncd has synced ({self.flag_file} exists)"
        if not self.use_adjtimex:
            return f"not synced: {self.flag_file} does not exist"
        kernel = adjtimex_synced()
        if kernel is None:
            return f"unknown: adjtimex is not allowed here and {self.flag_file} does not exist"
        if kernel:
            return "the kernel reports the clock synchronized (adjtimex)"
        return "not synced: the kernel reports STA_UNSYNC and no time daemon has synced yet"


class FakeClockSync:
    """Answers ``synced()`` from ``handler`` (default: a flag the test sets)."""

    def __init__(self, handler: Callable[[], bool] | None = None) -> None:
        self.is_synced = False
        self._handler = handler

    def synced(self) -> bool:
        return self._handler() if self._handler is not None else self.is_synced


class AssumeSynced:
    """``clock.sync = "none"``: the wall clock is trusted from the start."""

    def synced(self) -> bool:
        return True


def read_boot_id(path: Path = BOOT_ID) -> str:
    """The kernel's id of this boot; monotonic time is only comparable within one boot.

    Where it cannot be read, a random id per process (so readings held by an earlier process
    count as another boot's: flagged, never wrongly corrected)."""
    try:
        return path.read_text(encoding="ascii").strip() or uuid.uuid4().hex
    except OSError:
        return f"process-{uuid.uuid4().hex}"
