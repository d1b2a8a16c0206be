"""systemd's notification protocol (``sd_notify(3)``), spoken directly: no libsystemd.

A service of ``Type=notify`` tells systemd it is up (``READY=1``), that it is still healthy
(``WATCHDOG=1``, at least once per ``WatchdogSec``), that it is shutting down
(``STOPPING=1``) and what it is doing (``STATUS=...``, shown by ``systemctl status``). Each
message is one datagram of ``KEY=VALUE`` lines on the ``AF_UNIX``/``SOCK_DGRAM`` socket named
in ``$NOTIFY_SOCKET``; a name starting with ``@`` is in Linux's abstract namespace.

:class:`SocketNotifier` is the real adapter, :class:`FakeNotifier` records messages for unit
tests. Both implement :class:`edge_agent.ports.Notifier`. A notifier never raises: systemd
being gone must not take the agent down (a failed send is logged once, then at debug).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["FakeNotifier", "SocketNotifier", "notifier_from_env", "watchdog_interval_s"]

log = logging.getLogger(__name__)


class SocketNotifier:
    """Sends datagrams to one notify socket (a path, or ``@name`` for the abstract namespace).

    The address is resolved once at construction; the socket is unbound (systemd identifies
    the sender by its credentials, which the kernel attaches).
    """

    def __init__(self, address: str) -> None:
        if not address or address[0] not in "/@":
            raise ValueError(f"NOTIFY_SOCKET {address!r}: expected an absolute path or @name")
        self.address = address
        # The abstract namespace: a leading NUL instead of '@' (sd_notify(3)).
        self._target = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._failures = 0

    def notify(self, *states: str) -> bool:
        """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) in one datagram; True if sent."""
        payload = "\n".join(states).encode()
        try:
            self._sock.sendto(payload, self._target)
        except OSError as exc:
            self._failures += 1
            level = logging.WARNING if self._failures == 1 else logging.DEBUG
            log.log(level, "sd_notify to %s failed (%d so far): %s", self.address,
                    self._failures, exc)
            return False
        return True

    def close(self) -> None:
        self._sock.close()


class FakeNotifier:
    """Records every message (a tuple of its lines); ``handler`` may inspect or fail them."""

    def __init__(self, handler: Callable[[tuple[str, ...]], bool] | None = None) -> None:
        self.messages: list[tuple[str, ...]] = []
        self._handler = handler

    def notify(self, *states: str) -> bool:
        self.messages.append(states)
        return True if self._handler is None else self._handler(states)

    def close(self) -> None:
        """Nothing to release."""

    def sent(self, state: str) -> int:
        """How many messages carried exactly the line ``state`` (e.g. ``"WATCHDOG=1"``)."""
        return sum(1 for message in self.messages if state in message)


def notifier_from_env(environ: Mapping[str, str] | None = None) -> SocketNotifier | None:
    """The notifier systemd asked for, or None when not started by systemd (or misconfigured,
    which is logged: the agent still runs, systemd would then time out its start)."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return None
    try:
        return SocketNotifier(address)
    except (ValueError, OSError) as exc:
        log.error("cannot use NOTIFY_SOCKET: %s", exc)
        return None


def watchdog_interval_s(environ: Mapping[str, str] | None = None,
                        pid: int | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``$WATCHDOG_USEC`` (as ``sd_watchdog_enabled``
    advises), or None when the watchdog is off or meant for another process
    (``$WATCHDOG_PID`` names a different pid)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner.isdigit() and int(owner) != (os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2_000_000
