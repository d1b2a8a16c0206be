"""Drain a 1,000,000-reading backlog: agent buffer -> Mosquitto -> cloud -> DB, end to end.

The agent is the real ``homewatt-agent run`` process with a pre-filled buffer and no meters;
the cloud is the real service (API + ingestion worker) on PostgreSQL or SQLite. The clock runs
from the agent's start until the cloud has stored every reading; the agent empties its buffer
only on the cloud's acks, so this is the full guarantee's cost. In the same run: raw paho QoS 1
publish of the same batch payloads through the same broker, and the raw DB insert rate.

``python -m bench.bench_drain [--readings N]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_ingest import private_broker, raw_pg_copy, raw_sqlite, start_cloud
from edge_agent.buffer import SqliteBuffer
from edge_agent.drain import pack_batch
from protocols import Reading, Unit, topics
from tests.services import Mosquitto, throwaway_postgres

GW = "gw-drain-bench"
TS0 = 1_764_000_000_000
# A gateway's mix: 5 meters, a dozen channels each.
CHANNELS = [("grid", "power", Unit.WATT), ("grid", "voltage_l1", Unit.VOLT),
            ("grid", "energy_import", Unit.WATT_HOUR), ("pv", "power", Unit.WATT),
            ("pv", "energy_production", Unit.WATT_HOUR), ("heatpump", "power", Unit.WATT),
            ("heatpump", "current", Unit.AMPERE), ("waterheater", "power", Unit.WATT),
            ("grid", "frequency", Unit.HERTZ), ("grid_sunspec", "power", Unit.WATT)]


def backlog(count: int) -> list[Reading]:
    return [Reading(meter_id=CHANNELS[i % 10][0], channel=CHANNELS[i % 10][1],
                    value=round(1000.0 + (i % 997) * 1.37, 2), unit=CHANNELS[i % 10][2],
                    ts=TS0 + (i // 10) * 1000) for i in range(count)]


def prefill(path: Path, readings: list[Reading]) -> float:
    buffer = SqliteBuffer(path, max_bytes=2**31)
    buffer.open()
    start = time.perf_counter()
    for first in range(0, len(readings), 1000):
        buffer.append_seqs(readings[first:first + 1000])
    seconds = time.perf_counter() - start
    buffer.close()
    return len(readings) / seconds


def agent_config(workdir: Path, broker: Mosquitto) -> Path:
    path = workdir / "agent.toml"
    # Rate limits lifted: the default (AWS IoT Core's 100 msg/s, 512 KB/s) is a deployment
    # choice, not the pipeline's limit, which is what this measures.
    path.write_text(f'gateway_id = "{GW}"\ndata_dir = "{workdir / "agent"}"\n'
                    f'[mqtt]\nurl = "{broker.url}"\nmax_inflight_batches = 16\n'
                    "ack_timeout_s = 60\npublish_rate_per_s = 100000\n"
                    "publish_bytes_per_s = 1000000000\n[buffer]\nmax_bytes = 2000000000\n")
    return path


def drain_through_service(db_url: str, broker: Mosquitto, workdir: Path,
                          total: int) -> dict[str, Any]:
    service = start_cloud(db_url, broker, workdir / "cloud", GW)
    bindir = Path(sys.executable).parent
    start = time.perf_counter()
    agent = subprocess.Popen([str(bindir / "homewatt-agent"), "run", "--config",
                              str(agent_config(workdir, broker))],
                             env={"PATH": str(bindir)}, stdout=subprocess.DEVNULL,
                             stderr=(workdir / "agent.log").open("wb"))
    try:
        deadline = start + 900
        while service.worker.stats.stored_readings < total and time.perf_counter() < deadline:
            time.sleep(0.05)
        seconds = time.perf_counter() - start
    finally:
        agent.terminate()
        agent.wait(30)
    stored = service.store.count_readings(GW)
    stats = service.worker.stats.as_dict()
    service.stop()
    return {"seconds": round(seconds, 2), "stored": stored,
            "readings_per_s": round(total / seconds), "db_groups": stats["groups"],
            "duplicates": stats["duplicate_readings"]}


def _raw_publisher(port: int, payloads: list[bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(50)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(topics.telemetry(GW), p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def raw_mqtt(broker: Mosquitto, readings: list[Reading]) -> dict[str, float]:
    """paho QoS 1 publisher process -> Mosquitto -> paho subscriber, the agent's batch bytes."""
    payloads, seq = [], 1
    rows = [r.model_copy(update={"seq": i + 1}) for i, r in enumerate(readings)]
    while seq <= len(rows):
        batch = pack_batch(GW, rows[seq - 1:seq - 1 + 1500], 128 * 1024)
        assert batch is not None
        payloads.append(batch.payload)
        seq += len(batch.seqs)
    got, done, first_at = [0], threading.Event(), [0.0]

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        got[0] += 1
        if got[0] == 1:
            first_at[0] = time.perf_counter()
        if got[0] == len(payloads):
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-sub")
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(topics.telemetry(GW), qos=1)
    sub.loop_start()
    subscribed.wait(10)
    child = mp.get_context("spawn").Process(target=_raw_publisher, args=(broker.port, payloads))
    child.start()  # timed at the receiver, first to last message: no process start-up in it
    done.wait(300)
    seconds = (time.perf_counter() - first_at[0]) * len(payloads) / max(1, len(payloads) - 1)
    child.join(60)
    sub.disconnect()
    sub.loop_stop()
    return {"messages": len(payloads), "received": got[0],
            "readings_per_s": round(len(readings) / seconds),
            "messages_per_s": round(len(payloads) / seconds)}


def run(readings: int = 1_000_000, backends: tuple[str, ...] = ("postgres", "sqlite")
        ) -> dict[str, Any]:
    rows = backlog(readings)
    results: dict[str, Any] = {"readings": readings}
    with private_broker() as broker:
        results["raw_mqtt_qos1"] = raw_mqtt(broker, rows)
        for backend in backends:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                results["buffer_prefill_per_s"] = round(prefill(work / "agent" / "buffer.sqlite",
                                                                rows))
                if backend == "postgres":
                    with throwaway_postgres() as url:
                        results["postgres"] = drain_through_service(url, broker, work, readings)
                        results["raw_pg_copy_1000"] = round(raw_pg_copy(url, readings))
                else:
                    url = f"sqlite:///{work / 'cloud.sqlite'}"
                    results["sqlite"] = drain_through_service(url, broker, work, readings)
                    results["raw_sqlite_executemany_1000"] = round(
                        raw_sqlite(work / "raw.sqlite", readings))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    print(json.dumps(run(args.readings, tuple(args.backends.split(","))), indent=2))


if __name__ == "__main__":
    main()
