"""The gateway status message: what a subscriber to ``hw/{gw}/status`` learns."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.status import offline_status, online_status
from protocols.models import GatewayStatus, MeterHealth, decode, encode

NOW = 1_764_000_000_000


@dataclass(frozen=True)
class Stats:
    depth: int = 0
    oldest_ts_ms: int | None = None
    dropped_total: int = 0


def test_status_reports_depth_age_of_oldest_unsent_and_drops() -> None:
    stats = Stats(depth=1234, oldest_ts_ms=NOW - 90_500, dropped_total=10)
    status = online_status("gw-1", stats, {}, NOW)
    assert status.state == "online"
    assert status.buffer_depth == 1234
    assert status.oldest_unsent_age_s == 90.5
    assert status.dropped_readings == 10


def test_status_carries_per_meter_health() -> None:
    meters = {
        "grid": MeterHealth(state="ok", last_success_ts=NOW - 1000),
        "pv": MeterHealth(state="offline", consecutive_failures=5, last_error="timeout"),
    }
    status = decode(GatewayStatus, encode(online_status("gw-1", Stats(), meters, NOW)))
    assert status.meters["pv"].state == "offline"
    assert status.meters["pv"].last_error == "timeout"
    assert status.meters["grid"].last_success_ts == NOW - 1000


def test_empty_buffer_has_no_oldest_age() -> None:
    status = online_status("gw-1", Stats(depth=0, oldest_ts_ms=None), {}, NOW)
    assert status.buffer_depth == 0
    assert status.oldest_unsent_age_s is None


def test_reading_stamped_after_now_counts_as_age_zero() -> None:
    # NTP set the clock back after the reading was taken: age is 0, never negative.
    status = online_status("gw-1", Stats(depth=1, oldest_ts_ms=NOW + 5000), {}, NOW)
    assert status.oldest_unsent_age_s == 0.0


def test_offline_status_is_the_last_will() -> None:
    status = decode(GatewayStatus, encode(offline_status("gw-1", NOW)))
    assert status.state == "offline"
    assert status.gateway_id == "gw-1"
    assert status.ts == NOW
