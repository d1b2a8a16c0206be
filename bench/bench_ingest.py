"""Ingestion throughput: pre-encoded batches -> private Mosquitto -> homewatt-cloud worker ->
SQLite / PostgreSQL, timed until every reading is stored AND its TelemetryAck received.

Raw baselines measured in the same run: sqlite3 executemany and psycopg COPY, 1,000 rows per
transaction. Usage: ``python -m bench.bench_ingest [--readings N] [--backends sqlite,postgres]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import make_url

from cloud_sync.bootstrap import CloudService, build_service, build_store, load_settings
from cloud_sync.db import migrate
from protocols import Reading, TelemetryAck, TelemetryBatch, Unit, decode, encode, topics
from tests.services import Mosquitto, throwaway_postgres

GW = "gw-bench"
TS0 = 1_700_000_000_000
CHANNELS = ("power_w", "voltage_v", "current_a")


def make_payloads(total: int, per_batch: int) -> list[bytes]:
    payloads = []
    for first in range(1, total + 1, per_batch):
        n = min(per_batch, total - first + 1)
        payloads.append(encode(TelemetryBatch(gateway_id=GW, readings=[
            Reading(meter_id=f"m{(first + i) % 4}", channel=CHANNELS[(first + i) % 3],
                    value=float(first + i), unit=Unit.WATT, ts=TS0 + first + i, seq=first + i)
            for i in range(n)])))
    return payloads


def _publisher(port: int, total: int, per_batch: int, out: Any) -> None:
    """Child process: publish everything, wait for acks covering every seq, report seconds."""
    payloads = make_payloads(total, per_batch)
    acked: set[int] = set()
    done, ready = threading.Event(), threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        ack = decode(TelemetryAck, bytes(msg.payload))
        for r in ack.ranges:
            acked.update(range(r.first, r.last + 1))
        if len(acked) >= total:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(50)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe(topics.telemetry_ack(GW), qos=1)
    client.loop_start()
    ready.wait(10)
    start = time.perf_counter()
    for payload in payloads:
        client.publish(topics.telemetry(GW), payload, qos=1)
    finished = done.wait(300)
    out.put({"seconds": time.perf_counter() - start, "complete": finished,
             "acked": len(acked), "messages": len(payloads)})
    client.disconnect()
    client.loop_stop()


def start_cloud(db_url: str, broker: Mosquitto, data_dir: Path, gateway: str,
                **settings: Any) -> CloudService:
    """The real cloud service in this process, migrated, with ``gateway`` registered."""
    config = load_settings(db_url=db_url, mqtt_url=broker.url, data_dir=data_dir,
                           client_id=f"bench-cloud-{uuid.uuid4().hex[:6]}", **settings)
    store = build_store(config)
    migrate.upgrade(store.engine)
    store.add_gateway(gateway)
    store.engine.dispose()
    service = build_service(config)
    service.start()
    service.wait_started(30)
    service.bus.subscribed.wait(10)
    return service


def bench_service(db_url: str, broker: Mosquitto, data_dir: Path, total: int,
                  per_batch: int) -> dict[str, Any]:
    service = start_cloud(db_url, broker, data_dir, GW, ingest_queue_size=1024)
    out: Any = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(target=_publisher,
                                            args=(broker.port, total, per_batch, out))
    child.start()
    result: dict[str, Any] = out.get(timeout=600)
    child.join(30)
    stored = service.store.count_readings(GW)
    stats = service.worker.stats.as_dict()
    service.stop()
    result.update(stored=stored, readings_per_s=round(total / result["seconds"]),
                  groups=stats["groups"], overflowed=stats["overflowed"])
    return result


def raw_sqlite(path: Path, total: int, per_txn: int = 1000) -> float:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE r (gateway_id TEXT, seq INTEGER, meter_id TEXT, channel TEXT, "
                 "value REAL, unit TEXT, ts INTEGER, quality TEXT, PRIMARY KEY (gateway_id, seq))")
    rows = [(GW, i, "m1", "power_w", float(i), "W", TS0 + i, "good") for i in range(1, total + 1)]
    start = time.perf_counter()
    for i in range(0, total, per_txn):
        with conn:
            conn.executemany("INSERT OR IGNORE INTO r VALUES (?,?,?,?,?,?,?,?)",
                             rows[i:i + per_txn])
    seconds = time.perf_counter() - start
    conn.close()
    return total / seconds


def raw_pg_copy(url: str, total: int, per_txn: int = 1000) -> float:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    rows = [(GW, i, "m1", "power_w", float(i), "W", TS0 + i, "good") for i in range(1, total + 1)]
    with psycopg.connect(plain) as conn:
        conn.execute("CREATE TABLE raw_r (gateway_id text, seq bigint, meter_id text, "
                     "channel text, value float8, unit text, ts bigint, quality text, "
                     "PRIMARY KEY (gateway_id, seq))")
        conn.commit()
        start = time.perf_counter()
        for i in range(0, total, per_txn):
            with conn.cursor() as cur, cur.copy("COPY raw_r FROM STDIN") as copy:
                for row in rows[i:i + per_txn]:
                    copy.write_row(row)
            conn.commit()
        return total / (time.perf_counter() - start)


@contextmanager
def private_broker(extra: str = "") -> Iterator[Mosquitto]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp), "max_queued_messages 100000\n" + extra)
        broker.start()
        try:
            yield broker
        finally:
            broker.kill()


def run(readings: int = 300_000, per_batch: int = 900,
        backends: tuple[str, ...] = ("sqlite", "postgres")) -> dict[str, Any]:
    """Measure each backend end to end plus the raw baselines; returns a JSON-able dict."""
    results: dict[str, Any] = {"readings": readings, "per_batch": per_batch}
    with private_broker() as broker, tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        if "sqlite" in backends:
            results["sqlite"] = bench_service(f"sqlite:///{data / 'cloud.sqlite'}", broker,
                                              data, readings, per_batch)
            results["raw_sqlite_executemany_1000"] = round(
                raw_sqlite(data / "raw.sqlite", readings))
        if "postgres" in backends:
            with throwaway_postgres() as url:
                results["postgres"] = bench_service(url, broker, data, readings, per_batch)
                results["raw_pg_copy_1000"] = round(raw_pg_copy(url, readings))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--per-batch", type=int, default=900)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    print(json.dumps(run(args.readings, args.per_batch, tuple(args.backends.split(","))),
                     indent=2))


if __name__ == "__main__":
    main()
