"""What ``homewatt-sim fleet`` shows while it runs: gateways online, readings stored/s, backlog.

Two sources, both what an operator of a real fleet has: every gateway's retained
``hw/{gw}/status`` (online/offline, buffer depth = backlog, dropped readings, meter health),
followed by a paho subscriber, and each cloud replica's ``GET /api/v1/ingestion/stats``
(stored readings, dead letters, DB failures), summed. :func:`render` is pure.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

STATUS_FILTER = "hw/+/status"  # every gateway's retained GatewayStatus




@dataclass(frozen=True)
class Snapshot:
    at_s: float
    gateways: int
    online: int
    backlog: int
    dropped: int
    meters_failing: int
    stored: int
    dead_letters: int
    db_failures: int
    replicas_up: int


def render(now: Snapshot, before: Snapshot | None, elapsed_s: float) -> str:
    """One summary line; the rate is over the interval since ``before``."""
    rate = 0.0
    if before is not None and now.at_s > before.at_s:
        rate = (now.stored - before.stored) / (now.at_s - before.at_s)
    return (f"[{elapsed_s:6.0f} s] gateways online {now.online}/{now.gateways}  "
            f"stored {now.stored} ({rate:,.0f}/s)  backlog {now.backlog}  "
            f"dead letters {now.dead_letters}  errors: db {now.db_failures}, "
            f"meters failing {now.meters_failing}, dropped {now.dropped}  "
            f"cloud replicas up {now.replicas_up}")


class StatusFollower:
    """Keeps the latest retained status of every gateway (a paho network thread)."""

    def __init__(self, broker_url: str) -> None:
        parts = urlsplit(broker_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 1883
        self._lock = threading.Lock()
        self.latest: dict[str, dict[str, object]] = {}
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"fleet-monitor-{time.monotonic_ns()}")
        self._client.on_connect = lambda c, *_: c.subscribe(STATUS_FILTER, qos=1)
        self._client.on_message = self._on_message

    def start(self) -> None:
        self._client.connect_async(self._host, self._port)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            status = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(status, dict) and isinstance(status.get("gateway_id"), str):
            with self._lock:
                self.latest[status["gateway_id"]] = status

    def counts(self) -> tuple[int, int, int, int]:
        """(online, backlog readings, dropped readings, failing meters)."""
        with self._lock:
            statuses = list(self.latest.values())
        online = [s for s in statuses if s.get("state") == "online"]
        backlog = sum(int(str(s.get("buffer_depth", 0))) for s in online)
        dropped = sum(int(str(s.get("dropped_readings", 0))) for s in statuses)
        failing = 0
        for s in online:
            meters = s.get("meters")
            if isinstance(meters, dict):
                failing += sum(1 for m in meters.values()
                               if isinstance(m, dict) and m.get("state") != "ok")
        return len(online), backlog, dropped, failing


def ingestion_totals(client: httpx.Client, api_urls: list[str]) -> tuple[int, int, int, int]:
    """(stored readings, dead letters, DB failures, replicas answering), summed."""
    stored = dead = failures = up = 0
    for url in api_urls:
        try:
            stats = client.get(f"{url}/api/v1/ingestion/stats").json()
        except (httpx.HTTPError, ValueError):
            continue
        up += 1
        stored += int(stats.get("stored_readings", 0))
        dead += int(stats.get("dead_lettered", 0))
        failures += int(stats.get("db_failures", 0))
    return stored, dead, failures, up


def snapshot(follower: StatusFollower, client: httpx.Client, api_urls: list[str],
             gateways: int) -> Snapshot:
    online, backlog, dropped, failing = follower.counts()
    stored, dead, failures, up = ingestion_totals(client, api_urls)
    return Snapshot(time.monotonic(), gateways, online, backlog, dropped, failing, stored, dead,
                    failures, up)
