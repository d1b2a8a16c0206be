"""``make bench``: run every benchmark (or `--only` some) and update bench/RESULTS.md.

Each figure sits beside the raw limit it is compared with, both measured in this same run
(FIELD-NOTES.md has this machine's raw limits measured separately, for reference).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    bench_rollups,
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


def render_pipeline(result: dict[str, Any]) -> list[str]:
    """The telemetry and command pipeline against the raw limits, plus fleet scaling."""
    buffer, ingest, drain = result["buffer"], result["ingest"], result["drain"]
    commands, fleet, agent = result["commands"], result["fleet"], result["agent_cost"]
    lines = [
        "Readings/s unless noted; every ratio is against a raw limit measured in the same run.",
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
    ]
    return lines


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
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
    return {"buffer": buffer, "ingest": ingest, "drain": drain, "commands": commands,
            "fleet": fleet, "agent_cost": agent}


@dataclass(frozen=True)
class Benchmark:
    """One section of RESULTS.md: ``run`` measures (raw limits in the same run), ``render``
    turns its result into Markdown lines; the raw result is appended as JSON."""

    name: str
    title: str
    run: Callable[[argparse.Namespace], dict[str, Any]]
    render: Callable[[dict[str, Any]], list[str]]


BENCHMARKS = [
    Benchmark("pipeline", "Telemetry and command pipeline, fleet scaling", run_pipeline,
              render_pipeline),
    Benchmark("rollups", "Analytics rollups: a year of 15-minute data for 1,000 homes",
              lambda args: bench_rollups.run(args.rollup_homes, args.rollup_days),
              bench_rollups.render),
]


def _section(bench: Benchmark, result: dict[str, Any], seconds: float) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"<!-- bench:{bench.name} -->",
        f"## {bench.title}",
        "",
        f"Run {stamp} on {os.cpu_count()} cores ({platform.machine()}, Python "
        f"{platform.python_version()}), `python -m bench --only {bench.name}`, {seconds:.0f} s.",
        "",
        *bench.render(result),
        "",
        "<details><summary>Raw output</summary>",
        "",
        "```json",
        json.dumps(result, indent=1),
        "```",
        "",
        "</details>",
        f"<!-- /bench:{bench.name} -->",
    ]
    return "\n".join(lines)


def existing_sections(text: str) -> dict[str, str]:
    """The sections already in RESULTS.md, by name (kept when a run skips them)."""
    found = re.finditer(r"(?ms)^<!-- bench:([\w-]+) -->$.*?^<!-- /bench:\1 -->$", text)
    return {match.group(1): match.group(0) for match in found}


def write_results(new: dict[str, str]) -> None:
    old = existing_sections(RESULTS.read_text()) if RESULTS.exists() else {}
    merged = {**old, **new}
    order = [b.name for b in BENCHMARKS] + sorted(set(merged) - {b.name for b in BENCHMARKS})
    body = "\n\n".join(merged[name] for name in order if name in merged)
    RESULTS.write_text(HEADER + "\n" + body + "\n")


HEADER = """# Benchmark results

Written by `make bench` (every section) or `python -m bench --only NAME[,NAME]` (those sections;
the others are kept). Each section says when and how it was run; speed is never asserted in tests.
"""


def main() -> None:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain-readings", type=int, default=1_000_000)
    parser.add_argument("--rollup-homes", type=int, default=1000)
    parser.add_argument("--rollup-days", type=int, default=365)
    parser.add_argument("--only", default=",".join(names),
                        help=f"comma-separated sections to run (default all: {', '.join(names)})")
    args = parser.parse_args()
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        parser.error(f"--only: unknown benchmark {', '.join(unknown)} (known: {', '.join(names)})")
    sections = {}
    for bench in BENCHMARKS:
        if bench.name not in wanted:
            continue
        print(f"== {bench.name}: {bench.title}", flush=True)
        started = time.monotonic()
        result = bench.run(args)
        sections[bench.name] = _section(bench, result, time.monotonic() - started)
        write_results(sections)  # after each, so an interrupted run keeps what it measured
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
