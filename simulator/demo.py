"""``make demo``: simulator -> agent -> broker -> cloud on one machine, readings shown live.

Every part is a real process: a broker (Mosquitto when installed, else embedded amqtt), the
cloud on a SQLite file, ``homewatt-sim meters`` and one ``homewatt-agent run``. State lives in
``var/demo/`` so a second run continues where the first stopped. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from simulator import demo_registry
from simulator.broker import LocalBroker, free_port, wait_listening

GATEWAY = "gw-demo"
EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "agent.toml"


def _script(name: str) -> str:
    """The console script installed beside this interpreter (the venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


class Children:
    """Child processes, stopped in reverse start order with SIGTERM, then SIGKILL."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; "
                                   f"see {self.logdir / (name + '.log')}")

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def agent_config(workdir: Path, sim_port: int) -> Path:
    """The shipped example config, pointed at this run's simulator port."""
    text = EXAMPLE_CONFIG.read_text()
    text = re.sub(r"(?m)^port = 5020\b", f"port = {sim_port}", text)
    path = workdir / "agent.toml"
    path.write_text(text)
    return path


def render(items: list[dict[str, object]], elapsed_s: float, stored: int) -> str:
    lines = [f"homewatt demo: {GATEWAY}, {elapsed_s:5.0f} s, {stored} readings stored in the cloud "
             "(Ctrl-C stops)", f"{'meter':14} {'channel':16} {'value':>12} unit  quality  age"]
    now_ms = time.time() * 1000
    wanted = {"power", "energy_import", "energy_export", "energy_production", "voltage_l1",
              "voltage", "frequency"}
    for item in sorted(items, key=lambda i: (str(i["meter_id"]), str(i["channel"]))):
        if item["channel"] not in wanted:
            continue
        value = item["value"]
        shown = f"{value:12.1f}" if isinstance(value, float | int) else f"{'-':>12}"
        age = (now_ms - float(str(item["ts"]))) / 1000
        lines.append(f"{item['meter_id']!s:14} {item['channel']!s:16} {shown} {item['unit']!s:5} "
                     f"{item['quality']!s:8} {age:4.0f}s")
    return "\n".join(lines)


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[tuple[str, str, Children]]:
    """Start broker, cloud, simulator and agent; yield the cloud's base URL, an operator API
    key and the children."""
    logdir = workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(workdir / "broker")
    children = Children(logdir)
    try:
        broker.start()
        print(f"broker: {broker.kind} on {broker.url}")
        env = dict(os.environ, HOMEWATT_MQTT_URL=broker.url,
                   HOMEWATT_DATA_DIR=str(workdir / "cloud"), HOMEWATT_MQTT__URL=broker.url)
        env.pop("HOMEWATT_DB_URL", None)
        api_port, sim_port = free_port(), free_port()
        config = agent_config(workdir, sim_port)
        cloud_dir = workdir / "cloud"
        login = demo_registry.seed(f"sqlite:///{cloud_dir / 'cloud.sqlite'}", config,
                                   cloud_dir / "demo-api-key")
        children.start("cloud", [_script("homewatt-cloud"), "serve", "--port", str(api_port)], env)
        children.start("simulator", [_script("homewatt-sim"), "meters", "--port", str(sim_port)],
                       env)
        wait_listening(sim_port)
        wait_listening(api_port, timeout_s=30)
        agent_env = dict(env, HOMEWATT_DATA_DIR=str(workdir / "agent"))
        children.start("agent", [_script("homewatt-agent"), "run", "--config", str(config)],
                       agent_env)
        print(f"cloud API: http://127.0.0.1:{api_port}/docs   logs: {logdir}\n"
              f"log in as {login.email} / {login.password} (owner of {demo_registry.HOME_ID}); "
              f"operator API key in {cloud_dir / 'demo-api-key'}")
        yield f"http://127.0.0.1:{api_port}", login.api_key, children
    finally:
        children.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run simulator, agent, broker and cloud locally "
                                     "and show the readings the cloud has stored.")
    parser.add_argument("--workdir", type=Path, default=Path("var/demo"),
                        help="state and logs (default: var/demo)")
    parser.add_argument("--duration", type=float, default=0,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    args = parser.parse_args(argv)
    stop = False

    def _stop(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    shown_any = False
    try:
        with running_stack(args.workdir) as (base, api_key, children), \
                httpx.Client(base_url=base, timeout=2, headers={"X-API-Key": api_key}) as api:
            while not stop and (not args.duration or time.monotonic() - started < args.duration):
                time.sleep(1)
                if stop:  # Ctrl-C reached the children too: they are stopping, not failing
                    break
                children.check()
                try:
                    latest = api.get(f"/api/v1/gateways/{GATEWAY}/latest").json()["items"]
                    stats = api.get("/api/v1/ingestion/stats").json()
                except (httpx.HTTPError, KeyError, ValueError):
                    continue
                stored = int(stats.get("stored_readings", 0))
                screen = render(latest, time.monotonic() - started, stored)
                clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
                print(clear + screen, flush=True)
                shown_any = shown_any or bool(latest)
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print("stopped cleanly" if shown_any else "stopped before any reading arrived")
    return 0 if shown_any else 1


if __name__ == "__main__":
    sys.exit(main())
