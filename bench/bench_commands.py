"""Command round trip: POST -> ``executed`` visible via GET, through real Mosquitto.

The cloud (``homewatt-cloud serve``), the agent (``homewatt-agent run``) and the simulated
device (``homewatt-sim meters``, unit 20's switch register) are separate processes; the client
posts one command at a time and polls its status every 2 ms, so the figure includes a poll's
worth of slack. Each command fsyncs twice on the gateway (begin, finish) and commits twice in
the cloud (create, ack). ``python -m bench.bench_commands [--commands N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bench_ingest import private_broker
from tests.e2e.harness import BIN, Proc
from tests.services import free_port, throwaway_postgres, wait_port

GW = "gw-cmd-bench"
DEVICE = "waterheater-switch"
DEVICE_ID = f"{GW}.{DEVICE}"  # the registry id: the API path


def _stack(work: Path, broker_url: str, db_url: str | None) -> tuple[list[Proc], int]:
    logdir = work / "logs"
    logdir.mkdir(parents=True)
    sim_port, api_port = free_port(), free_port()
    env = {"PATH": str(BIN), "HOMEWATT_MQTT_URL": broker_url, "HOMEWATT_DATA_DIR": str(work),
           # Benchmarks measure latency, not the per-device abuse limit.
           "HOMEWATT_COMMAND_RATE_PER_MIN": "1000000", "HOMEWATT_COMMAND_QUEUE_MAX": "100000"}
    if db_url:
        env["HOMEWATT_DB_URL"] = db_url
    config = work / "agent.toml"
    config.write_text(f'gateway_id = "{GW}"\ndata_dir = "{work / "agent"}"\n'
                      f'[mqtt]\nurl = "{broker_url}"\npublish_rate_per_s = 10000\n'
                      f'[[buses]]\nname = "sim"\nkind = "tcp"\nhost = "127.0.0.1"\n'
                      f"port = {sim_port}\n[[actuators]]\nid = \"{DEVICE}\"\n"
                      'kind = "modbus_switch"\nbus = "sim"\nunit = 20\naddress = 0\n')
    admin = [str(BIN / "homewatt-cloud"), "--log-level", "WARNING", "admin"]
    import subprocess

    subprocess.run([*admin, "add-gateway", GW], env=env, check=True, capture_output=True)
    subprocess.run([*admin, "add-device", GW, DEVICE, "--capabilities", "switch_on,switch_off"],
                   env=env, check=True, capture_output=True)
    made = subprocess.run([*admin, "create-api-key", "--name", "bench", "--operator", "--json"],
                          env=env, check=True, capture_output=True, text=True)
    (work / "api-key").write_text(json.loads(made.stdout)["api_key"])
    procs = [Proc("sim", [str(BIN / "homewatt-sim"), "meters", "--port", str(sim_port)], env,
                  logdir),
             Proc("cloud", [str(BIN / "homewatt-cloud"), "--log-level", "WARNING", "serve",
                            "--port", str(api_port)], env, logdir),
             Proc("agent", [str(BIN / "homewatt-agent"), "run", "--config", str(config)],
                  {"PATH": str(BIN)}, logdir)]
    for proc in procs:
        proc.start()
    wait_port(sim_port)
    wait_port(api_port, timeout=30)
    return procs, api_port


def _round_trips(api: httpx.Client, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        action = "switch_off" if i % 2 else "switch_on"
        start = time.perf_counter()
        reply = api.post(f"/api/v1/devices/{DEVICE_ID}/commands",
                         headers={"Idempotency-Key": f"b{i}"},
                         json={"action": action, "params": {}, "ttl_s": 60})
        reply.raise_for_status()
        url = f"/api/v1/devices/{DEVICE_ID}/commands/{reply.json()['command_id']}"
        while True:
            status = api.get(url).json()["status"]
            if status == "executed":
                break
            if status in ("rejected", "failed", "expired", "unknown"):
                raise RuntimeError(f"command {i} ended {status}")
            time.sleep(0.002)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def measure(broker_url: str, db_url: str | None, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        procs, api_port = _stack(Path(tmp), broker_url, db_url)
        try:
            key = (Path(tmp) / "api-key").read_text()
            with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10,
                              headers={"X-API-Key": key}) as api:
                _round_trips(api, 20)  # warm-up: connections, first SunSpec-free poll, caches
                ms = sorted(_round_trips(api, count))
        finally:
            for proc in reversed(procs):
                proc.terminate()
    q = statistics.quantiles(ms, n=100)
    return {"commands": count, "p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1),
            "p99_ms": round(q[98], 1), "max_ms": round(ms[-1], 1)}


def run(commands: int = 1000) -> dict[str, Any]:
    """Both databases on the broker config we ship (``set_tcp_nodelay true``), and SQLite on
    stock Mosquitto, whose Nagle delay adds about 40 ms to a hop that follows a small write."""
    results: dict[str, Any] = {}
    with private_broker("set_tcp_nodelay true") as broker:
        results["sqlite"] = measure(broker.url, None, commands)
        with throwaway_postgres() as url:
            results["postgres"] = measure(broker.url, url, commands)
    with private_broker() as broker:
        results["sqlite_stock_mosquitto"] = measure(broker.url, None, commands)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1000)
    print(json.dumps(run(parser.parse_args().commands), indent=2))


if __name__ == "__main__":
    main()
