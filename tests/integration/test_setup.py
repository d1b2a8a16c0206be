"""``homewatt-agent setup`` walks scan -> provision -> doctor against the simulator and a
real Mosquitto: the scanned meters land in the config (comments and other tables kept),
provisioning runs on that config, and doctor's verdict is setup's exit code."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from edge_agent.config import BusSettings, load_config
from edge_agent.doctor import ServiceUser
from edge_agent.scan_snippet import parse_units
from edge_agent.setup_cli import SetupOptions, setup
from tests.integration.sim_process import simulator_process
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def sim_port() -> Iterator[int]:
    with simulator_process(seed=4) as port:
        yield port


def starting_config(tmp_path: Path) -> Path:
    flag = tmp_path / "synchronized"
    flag.touch()  # the clock counts as synced (timesyncd's flag file)
    config = tmp_path / "agent.toml"
    config.write_text(f'''# installed by the packaging
gateway_id = "gw-unprovisioned"
data_dir = "{tmp_path / 'data'}"

[clock]
timesync_flag = "{flag}"  # keep this comment
''')
    return config


def options(config: Path, sim_port: int, **kw: object) -> SetupOptions:
    bus = BusSettings(name="main", kind="tcp", host="127.0.0.1", port=sim_port, timeout_s=0.2)
    kw.setdefault("user", ServiceUser.current())
    return SetupOptions(config, bus, parse_units("1-3,126,240"), **kw)  # type: ignore[arg-type]


def test_setup_scans_provisions_then_runs_doctor(tmp_path: Path, sim_port: int,
                                                 mosquitto: Mosquitto,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = starting_config(tmp_path)
    asked: list[str] = []
    steps: list[str] = []

    def provision(path: Path, extra: Sequence[str]) -> int:
        # Provisioning writes the broker and thing name into the config setup just wrote.
        steps.append(f"provision {list(extra)} with {len(load_config(path).meters)} meters")
        text = path.read_text().replace('"gw-unprovisioned"', '"gw-0042"')
        path.write_text(text + f'\n[mqtt]\nurl = "{mosquitto.url}"\n')
        return 0

    def ask(question: str) -> bool:
        asked.append(question)
        return True

    code = setup(options(config, sim_port, provision_args=["--claim", "c.pem"]), ask=ask,
                 provision=provision)
    out = capsys.readouterr().out
    assert code == 0, out
    assert asked == [f"write 5 meter(s) on bus main into {config}?"]
    assert steps == ["provision ['--claim', 'c.pem'] with 5 meters"]
    written = load_config(config)
    assert written.gateway_id == "gw-0042"
    assert {m.unit: m.model for m in written.meters} == {
        1: "sdm630", 2: "sdm120", 3: "sdm120", 126: "sunspec", 240: "sunspec"}
    assert "# keep this comment" in config.read_text()
    assert (tmp_path / "agent.toml.bak").read_text().startswith("# installed by the packaging")
    order = [out.index(f"== step {n}/3") for n in (1, 2, 3)]
    assert order == sorted(order)
    for name in ("meter sdm630-1", "meter sunspec-126", "broker", "clock", "disk"):
        assert any(line.startswith("PASS") and name in line for line in out.splitlines()), name
    assert "all checks passed" in out


def test_declining_writes_nothing_and_a_failed_provision_stops(
        tmp_path: Path, sim_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    config = starting_config(tmp_path)
    before = config.read_text()
    declined = setup(options(config, sim_port), ask=lambda _q: False,
                     provision=lambda _p, _a: 0)
    assert declined == 2
    assert config.read_text() == before
    failed = setup(options(config, sim_port), ask=lambda _q: True,
                   provision=lambda _p, _a: 3)
    out = capsys.readouterr().out
    assert failed == 1
    assert "provisioning failed (exit 3)" in out
    assert "== step 3/3" not in out


def test_setup_cli_needs_yes_without_a_terminal_and_reports_doctor_failures(
        tmp_path: Path, sim_port: int) -> None:
    config = starting_config(tmp_path)
    base = [sys.executable, "-m", "edge_agent.cli", "setup", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(sim_port), "--units", "1-3",
            "--timeout", "0.2", "--skip-provision"]
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 2
    assert "add --yes" in refused.stderr
    done = subprocess.run([*base, "--yes"], capture_output=True, text=True, timeout=60,
                          check=False, stdin=subprocess.DEVNULL)
    # No broker at the default 127.0.0.1:1883 is guaranteed here, so doctor decides; the
    # meters were found and written either way.
    assert "wrote" in done.stdout and "skipped (--skip-provision)" in done.stdout
    assert [m.unit for m in load_config(config).meters] == [1, 2, 3]
    assert done.returncode in (0, 1)
    assert ("all checks passed" in done.stdout) == (done.returncode == 0)


def test_setup_lets_the_service_user_read_what_provisioning_wrote(
        tmp_path: Path, sim_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Provisioning as root writes the key 0600 root:root; the agent runs as its own user."""
    if os.geteuid() != 0:
        pytest.skip("only root changes a file's group")  # CI runs as root
    config = starting_config(tmp_path)
    nobody = ServiceUser.named("nobody")
    key = tmp_path / "gateway.key"

    def provision(path: Path, _extra: Sequence[str]) -> int:
        key.write_text("not really a key")
        key.chmod(0o600)
        path.write_text(path.read_text() + f'\n[mqtt]\nurl = "mqtts://127.0.0.1:8883"\n'
                        f'cert_file = "{key}"\nkey_file = "{key}"\n')
        return 0

    setup(options(config, sim_port, user=nobody), ask=lambda _q: True, provision=provision)
    out = capsys.readouterr().out
    st = key.stat()
    assert st.st_gid == pwd.getpwnam("nobody").pw_gid
    assert st.st_mode & 0o777 == 0o640  # the group may read, nobody else
    assert f"made {key} readable by nobody" in out
