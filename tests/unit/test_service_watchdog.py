"""systemd watchdog decisions: ping while the liveness window says alive, withhold after it,
and treat a probe that hangs as a failed check."""

from __future__ import annotations

import asyncio

from edge_agent.health_server import Probe
from edge_agent.sd_notify import FakeNotifier, SocketNotifier, watchdog_interval_s
from edge_agent.service_watchdog import ServiceWatchdog, watchdog_verdict
from observability.health import LivenessWindow

HEALTHY = Probe({"buffer": "ok", "tasks": "ok"}, {"uplink": "ok", "meters": "ok"})
OFFLINE = Probe({"buffer": "ok", "tasks": "ok"}, {"uplink": "not connected (buffering)",
                                                  "meters": "ok"})
BROKEN = Probe({"buffer": "telemetry buffer x: disk I/O error", "tasks": "ok"}, {})


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_our_pid() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval_s({}, pid=7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, pid=7) is None


def test_notify_socket_must_be_a_path_or_abstract_name() -> None:
    for bad in ("", "relative/path", "tcp://x"):
        try:
            SocketNotifier(bad)
        except ValueError as exc:
            assert "NOTIFY_SOCKET" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")


def test_healthy_and_degraded_agents_ping_with_a_status() -> None:
    window = LivenessWindow(120.0, Ticks())
    window.record(True)
    assert watchdog_verdict(HEALTHY, window).ping
    assert watchdog_verdict(HEALTHY, window).status == "running"
    offline = watchdog_verdict(OFFLINE, window)
    assert offline.ping  # offline from the cloud still buffers: not a reason to restart
    assert offline.status == "degraded: uplink: not connected (buffering)"


def test_ping_continues_inside_the_window_and_stops_after_it() -> None:
    ticks = Ticks()
    window = LivenessWindow(60.0, ticks)
    window.record(False)
    ticks.now += 59
    inside = watchdog_verdict(BROKEN, window)
    ticks.now += 2
    after = watchdog_verdict(BROKEN, window)
    assert inside.ping
    assert inside.status.startswith("unhealthy for 59s: buffer:")
    assert not after.ping
    assert "awaiting restart" in after.status and "disk I/O error" in after.status


async def test_service_watchdog_withholds_pings_once_unhealthy_too_long() -> None:
    ticks = Ticks()
    current = {"probe": HEALTHY}

    async def probe() -> Probe:
        return current["probe"]

    notifier = FakeNotifier()
    watchdog = ServiceWatchdog(notifier, probe, LivenessWindow(10.0, ticks), interval_s=5.0)
    watchdog.ready()
    await watchdog.check_once()
    current["probe"] = BROKEN
    await watchdog.check_once()  # failing since now
    ticks.now += 11
    await watchdog.check_once()  # failing for 11 s > 10 s: withheld
    current["probe"] = HEALTHY
    await watchdog.check_once()  # recovered: pings again
    watchdog.stopping()

    assert notifier.messages[0] == ("READY=1", "STATUS=running")
    assert notifier.sent("WATCHDOG=1") == 3
    assert watchdog.withheld == 1
    assert notifier.messages[3][0].startswith("STATUS=unhealthy for 11s")
    assert notifier.messages[-1] == ("STOPPING=1", "STATUS=stopping")


async def test_a_hanging_probe_counts_as_a_failed_check() -> None:
    async def hangs() -> Probe:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    ticks = Ticks()
    window = LivenessWindow(0.0, ticks)
    watchdog = ServiceWatchdog(FakeNotifier(), hangs, window, interval_s=0.01)
    first = await watchdog.check_once()
    ticks.now += 1
    second = await watchdog.check_once()
    assert first.ping  # failing for 0 s is still inside a 0 s window
    assert not second.ping
    assert "probe: no answer within" in second.status


async def test_without_a_notifier_nothing_runs() -> None:
    async def probe() -> Probe:
        raise AssertionError("must not be probed")

    watchdog = ServiceWatchdog(None, probe, LivenessWindow(1.0), interval_s=0.01)
    watchdog.ready()
    await asyncio.wait_for(watchdog.run(), 1.0)  # returns at once
    watchdog.stopping()
