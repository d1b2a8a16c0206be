"""``make bench``: run every benchmark and rewrite bench/RESULTS.md.

Each figure sits beside the raw limit it is compared with, both measured in this same run
(FIELD-NOTES.md has this machine's raw limits measured separately, for reference).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    bench_agent_cost,
    bench_buffer,
    bench_commands,
    bench_drain,
    bench_fleet,
    bench_ingest,
)

RESULTS = Path(__file__).with_name("RESULTS.md")


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _row(name: str, measured: float, raw_name: str, raw: float, target: str) -> str:
    return (f"| {name} | {_rate(measured)} | {raw_name}: {_rate(raw)} | {measured / raw:.2f} "
            f"| {target} |")


def _fleet_lines(fleet: dict[str, Any], agent: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Fleet on PostgreSQL, {fleet['meters_per_gateway']} meters per gateway polled every "
        f"{fleet['interval_s']:.0f} s, one cloud replica (docs/scaling.md explains the knee):",
        "",
        "| gateways | stored/s | ingestion latency p95 | cloud CPU | cloud CPU per gateway "
        "| cloud RSS | agents' CPU | machine CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in fleet["sizes"]:
        lines.append(
            f"| {size['gateways']} | {size['stored_per_s']:,.0f} | "
            f"{size['latency_ms']['p95']:,.0f} ms | {size['cloud_cpu_pct']:.1f} % | "
            f"{size['cloud_cpu_pct_per_gateway']:.3f} % | {size['cloud_rss_mb']:.0f} MB | "
            f"{size['agents_cpu_pct']:.0f} % | {size['machine_cpu_pct']:.0f} % |")
    lines += ["", "Agent cost at 1 s polling (one agent process):", "",
              "| meters | CPU (of one core) | RSS |", "|---|---|---|"]
    for point in agent["points"]:
        lines.append(f"| {point['meters']} | {point['cpu_pct']:.2f} % | {point['rss_mb']:.1f} MB |")
    per = agent["per_meter"]
    lines.append(f"| per meter | {per['cpu_pct']:.2f} % | {per['rss_mb']:.2f} MB |")
    return lines


def render(buffer: dict[str, float], ingest: dict[str, Any], drain: dict[str, Any],
           commands: dict[str, Any], fleet: dict[str, Any], agent: dict[str, Any],
           seconds: float) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Run {stamp} on {os.cpu_count()} cores ({platform.machine()}, Python "
        f"{platform.python_version()}), `make bench`, {seconds:.0f} s in all. Readings/s unless "
        "noted; every ratio is against a raw limit measured in the same run.",
        "",
        "| figure | measured | raw limit (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for batch in (100, 1000):
        lines.append(_row(f"edge buffer append, {batch} readings/txn",
                          buffer[f"append_seqs_{batch}"], "sqlite3 executemany, same table",
                          buffer[f"raw_{batch}"], ">= 0.50"))
    lines.append(_row("edge buffer read (pending, pages of 1,000)", buffer["pending_1000"],
                      "edge buffer append, 1,000/txn", buffer["append_seqs_1000"], "-"))
    lines.append(_row("cloud ingestion via Mosquitto, PostgreSQL",
                      ingest["postgres"]["readings_per_s"], "COPY 1,000 rows/txn",
                      ingest["raw_pg_copy_1000"], "-"))
    lines.append(_row("cloud ingestion via Mosquitto, SQLite", ingest["sqlite"]["readings_per_s"],
                      "sqlite3 executemany 1,000/txn", ingest["raw_sqlite_executemany_1000"], "-"))
    n = drain["readings"]
    lines.append(_row(f"drain {n:,}-reading backlog, agent -> Mosquitto -> cloud -> PostgreSQL",
                      drain["postgres"]["readings_per_s"], "COPY 1,000 rows/txn",
                      drain["raw_pg_copy_1000"], ">= 40,000/s"))
    lines.append(_row("  same drain, against raw MQTT", drain["postgres"]["readings_per_s"],
                      "paho QoS 1, same batch bytes", drain["raw_mqtt_qos1"]["readings_per_s"],
                      "-"))
    lines.append(_row(f"drain {n:,}-reading backlog into SQLite", drain["sqlite"]["readings_per_s"],
                      "sqlite3 executemany 1,000/txn", drain["raw_sqlite_executemany_1000"], "-"))
    lines += [
        "",
        "| command round trip (POST -> executed visible via GET), "
        f"{commands['sqlite']['commands']:,} commands | p50 | p95 | p99 | max | target |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("sqlite", "SQLite, Mosquitto with set_tcp_nodelay (shipped config)"),
                       ("postgres", "PostgreSQL, Mosquitto with set_tcp_nodelay"),
                       ("sqlite_stock_mosquitto", "SQLite, stock Mosquitto (Nagle on)")):
        c = commands[key]
        lines.append(f"| {label} | {c['p50_ms']} ms | {c['p95_ms']} ms | {c['p99_ms']} ms "
                     f"| {c['max_ms']} ms | p95 <= 50 ms |")
    lines += _fleet_lines(fleet, agent)
    lines += [
        "",
        f"Drain: {drain['postgres']['stored']:,} stored in {drain['postgres']['seconds']} s "
        f"(PostgreSQL), {drain['sqlite']['stored']:,} in {drain['sqlite']['seconds']} s (SQLite); "
        f"raw MQTT moved {drain['raw_mqtt_qos1']['messages']} batches of the same bytes at "
        f"{drain['raw_mqtt_qos1']['messages_per_s']:,} msg/s. The agent's publish-rate limits "
        "(AWS IoT Core's 100 msg/s, 512 KB/s by default) are lifted for the drain: they are a "
        "deployment setting, not the pipeline's limit.",
        "",
        "## Raw output",
        "",
        "```json",
        json.dumps({"buffer": buffer, "ingest": ingest, "drain": drain, "commands": commands,
                    "fleet": fleet, "agent_cost": agent}, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain-readings", type=int, default=1_000_000)
    args = parser.parse_args()
    started = time.monotonic()
    print("edge buffer ...", flush=True)
    buffer = bench_buffer.run()
    print("cloud ingestion ...", flush=True)
    ingest = bench_ingest.run()
    print(f"drain of {args.drain_readings:,} readings ...", flush=True)
    drain = bench_drain.run(args.drain_readings)
    print("command round trips ...", flush=True)
    commands = bench_commands.run()
    print("agent cost per meter ...", flush=True)
    agent = bench_agent_cost.run()
    print("fleet scaling 10 -> 500 gateways ...", flush=True)
    fleet = bench_fleet.run()
    RESULTS.write_text(render(buffer, ingest, drain, commands, fleet, agent,
                              time.monotonic() - started))
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
