"""The homeowner web app in headless Chromium, against the real stack.

Simulator -> agent -> Mosquitto -> cloud (rollup job every second) -> web app served by the
cloud. A homeowner logs in with e-mail and password, sees today's energy (rolled up from what
the agent just sent) and the power flow, switches the water heater off and sees the command
executed; the simulated device logged exactly that register write. Debian's Chromium is driven
through Playwright's Python package with that executable: no browser download.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cloud_sync.db.engine import make_engine
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import make_db_breaker
from tests.auth_helpers import PASSWORD, home_with_owner
from tests.e2e.harness import Stack, wait_until
from tests.services import Mosquitto, missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ACTUATORS = """
[[actuators]]
id = "waterheater-switch"
kind = "modbus_switch"
bus = "sim"
unit = 20
address = 0
"""
METERS = {"grid": "grid", "pv": "pv", "heatpump": "load", "waterheater": "load"}


def _register(stack: Stack) -> None:
    """Home, owner, meters with roles and the switch, straight into the cloud's database (the
    installer CLI is tested on its own; eight CLI start-ups would cost this test ~10 s)."""
    engine = make_engine(f"sqlite:///{stack.cloud_db}")
    try:
        home_with_owner(engine, "ann@example.com", stack.gateway, timezone="Europe/Berlin")
        registry = SqlRegistryStore(engine, make_db_breaker(3, 1.0))
        for local_id, role in METERS.items():
            registry.add_device(stack.gateway, local_id, 0, kind="meter", capabilities=[],
                                role=role)
        registry.add_device(stack.gateway, "waterheater-switch", 0, kind="actuator",
                            capabilities=["switch_on", "switch_off"], name="Water heater")
    finally:
        engine.dispose()


def _wh(text: str) -> float:
    """The energy a figure shows ("6 Wh", "1.25 kWh") in Wh; -1 when it shows none."""
    found = re.search(r"([0-9.]+) (k?Wh)", text)
    if not found:
        return -1.0
    return float(found.group(1)) * (1000 if found.group(2) == "kWh" else 1)


def test_log_in_see_todays_energy_switch_a_device_and_see_it_executed(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    if not os.path.exists(CHROMIUM):
        missing("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    stack = Stack(tmp_path, mosquitto.url, gateway="gw-web", interval_s=1,
                  extra_config=ACTUATORS)
    stack.cloud_env["HOMEWATT_ANALYTICS_INTERVAL_S"] = "1"
    try:
        stack.start()
        _register(stack)
        base = f"http://127.0.0.1:{stack.api_port}"
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"{base}/")  # redirects to /app/
            page.fill("input[name=username]", "ann@example.com")
            page.fill("input[name=password]", "not the password")
            page.click("button[type=submit]")
            sync_api.expect(page.get_by_test_id("login-error")).not_to_be_empty()
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            sync_api.expect(page.get_by_test_id("home-name")).to_contain_text(
                "home of ann@example.com")

            # today's energy: the rollup job turns the agent's counters into kWh; reload
            # until the first rollup has run
            def energy_shown() -> bool:
                page.reload()
                page.wait_for_function(
                    "document.getElementById('today-consumption').textContent !== '-'",
                    timeout=10_000)
                return _wh(page.get_by_test_id("today-consumption").inner_text()) > 0
            wait_until(energy_shown, 60, "today's energy in the web app", every_s=1)
            assert page.locator("#today-chart rect.use").count() >= 1
            sync_api.expect(page.get_by_test_id("flow-grid")).not_to_have_text("")

            device = page.get_by_test_id(f"device-{stack.device_id('waterheater-switch')}")
            device.get_by_role("button", name="Off").click()
            status = page.get_by_test_id(f"status-{stack.device_id('waterheater-switch')}")
            sync_api.expect(status).to_have_text("executed", timeout=30_000)
            browser.close()
        writes = stack.control.get("/writes").json()["writes"]
        assert [(w["register"], w["value"]) for w in writes if w["unit"] == 20] == [(0, 0)]
    finally:
        stack.stop()
