"""The analytics API through the real service and database, on data with known answers.

A Berlin home: 500 W around the clock, a 2 kW water heater 18:00-19:00, 1 kW of PV 11:00-13:00
(half of it exported), for the 14 days before today. So every day: 14 kWh used, 2 kWh PV,
1 kWh exported, 13 kWh imported. Under a time-of-use tariff (0.20 at night, 0.40 by day,
feed-in 0.08) a day costs 3 x 0.20 + 10 x 0.40 - 0.08 = 4.52, and moving the heater to
00:00-01:00 saves 2 x (0.40 - 0.20) = 0.40 a day.
"""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from cloud_sync.analytics import calendar
from cloud_sync.analytics.schedule import wants_on
from cloud_sync.analytics_jobs import RollupJob
from cloud_sync.analytics_schedules import ScheduleRunner
from cloud_sync.bootstrap import CloudService, build_service, load_settings
from cloud_sync.db import migrate
from cloud_sync.db.analytics_queries import SqlAnalyticsStore
from cloud_sync.db.analytics_store import SqlRollupStore
from cloud_sync.db.analytics_zones import GatewayZones
from cloud_sync.db.commands_store import CommandLimits
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.schema import commands
from protocols import Reading, TelemetryBatch, Unit
from tests.auth_helpers import PASSWORD, TEST_JWT_SECRET, home_with_owner
from tests.integration.conftest_cloud import db_url  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
BERLIN = ZoneInfo("Europe/Berlin")
GW = "gw-home"
TOU = {"currency": "EUR",
       "import_pricing": {"kind": "tou", "default_price": 0.40,
                          "windows": [{"start": "00:00", "end": "06:00", "price": 0.20}]},
       "feed_in": {"kind": "fixed", "price": 0.08}}


def quarter_power(local_minute: int) -> tuple[float, float, float]:
    """(home load W incl. heater, heater W, PV W) in a quarter hour of the local day."""
    hour = local_minute // 60
    heater = 2000.0 if hour == 18 else 0.0
    pv = 1000.0 if 11 <= hour < 13 else 0.0
    return 500.0 + heater, heater, pv


def synthetic_readings(first_ms: int, last_ms: int) -> list[Reading]:
    counters = {"grid/energy_import": 1e6, "grid/energy_export": 2e5, "pv/energy_production": 3e6,
                "heater/energy_import": 4e5}
    out: list[Reading] = []
    ts = first_ms
    while ts <= last_ms:
        for name, value in counters.items():
            meter, channel = name.split("/")
            out.append(Reading(meter_id=meter, channel=channel, value=value,
                               unit=Unit.WATT_HOUR, ts=ts, seq=len(out) + 1))
        local = calendar.local(ts, BERLIN)
        load, heater, pv = quarter_power(local.hour * 60 + local.minute)
        net = load - pv
        counters["grid/energy_import"] += max(net, 0.0) / 4
        counters["grid/energy_export"] += max(-net, 0.0) / 4
        counters["pv/energy_production"] += pv / 4
        counters["heater/energy_import"] += heater / 4
        ts += 900_000
    for meter, watts in (("grid", 1500.0), ("pv", 0.0), ("heater", 2000.0)):
        out.append(Reading(meter_id=meter, channel="power", value=watts, unit=Unit.WATT,
                           ts=last_ms, seq=len(out) + 1))
    return out


@dataclass
class World:
    service: CloudService
    client: httpx.AsyncClient
    home: str
    days: list[str]  # the 14 whole local days, oldest first


async def _login(client: httpx.AsyncClient, email: str) -> None:
    reply = await client.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    client.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    settings = load_settings(db_url=db_url, data_dir=tmp_path, jwt_secret=TEST_JWT_SECRET,
                             mqtt_url="mqtt://127.0.0.1:1")
    service = build_service(settings)  # never started: the API needs only the database
    engine = service.engine
    migrate.upgrade(engine)
    home, _user = home_with_owner(engine, "ann@example.com", GW, timezone="Europe/Berlin")
    home_with_owner(engine, "ben@example.com", "gw-other")
    registry = SqlRegistryStore(engine, service.store.breaker)
    for local, role in (("grid", "grid"), ("pv", "pv"), ("heater", "load")):
        registry.add_device(GW, local, 0, kind="meter", capabilities=[], role=role)
    registry.add_device(GW, "heater-switch", 0, kind="actuator",
                        capabilities=["switch_on", "switch_off"])
    today = calendar.day_of(service_now(), BERLIN)
    first = calendar.day_start(today - timedelta(days=14), BERLIN)
    service.store.ingest([TelemetryBatch(gateway_id=GW, readings=chunk) for chunk in _chunks(
        synthetic_readings(first, calendar.day_start(today, BERLIN)))], [])
    zones = GatewayZones(engine, ttl_s=0)
    RollupJob(SqlRollupStore(engine, service.store.breaker, zones),
              zones=zones.zones).run_until_clean()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app),
                                 base_url="http://cloud") as client:
        yield World(service, client, home,
                    [str(today - timedelta(days=k)) for k in range(14, 0, -1)])
    engine.dispose()


def service_now() -> int:
    from cloud_sync.db.store import now_ms

    return now_ms()


def _chunks(readings: list[Reading], size: int = 5000) -> list[list[Reading]]:
    return [readings[i:i + size] for i in range(0, len(readings), size)]


async def test_energy_by_hour_day_and_csv_with_known_totals(world: World) -> None:
    c = world.client
    await _login(c, "ann@example.com")
    day = world.days[3]
    reply = await c.get(f"/api/v1/homes/{world.home}/energy",
                  params={"from": day, "to": world.days[4], "resolution": "hour"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["items"]) == 24 and body["timezone"] == "Europe/Berlin"
    assert body["totals"] == {"grid_import_kwh": 13.0, "grid_export_kwh": 1.0, "pv_kwh": 2.0,
                              "consumption_kwh": 14.0, "self_consumed_kwh": 1.0}
    evening = next(i for i in body["items"] if i["start"][11:13] == "18")
    assert evening["devices"] == {f"{GW}.heater": 2.0}
    days = (await c.get(f"/api/v1/homes/{world.home}/energy",
                 params={"period": "last_7_days", "resolution": "day"})).json()
    assert [i["consumption_kwh"] for i in days["items"]] == [14.0] * 7
    csv_reply = await c.get(f"/api/v1/homes/{world.home}/energy",
                      params={"from": day, "to": world.days[4], "resolution": "hour",
                              "format": "csv"})
    lines = csv_reply.text.splitlines()
    assert csv_reply.headers["content-type"].startswith("text/csv")
    assert lines[0].endswith(f"device:{GW}.heater") and len(lines) == 25
    bad = await c.get(f"/api/v1/homes/{world.home}/energy", params={"resolution": "week"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("resolution:")


async def test_another_home_answers_404_and_no_token_401(world: World) -> None:
    c = world.client
    assert (await c.get(f"/api/v1/homes/{world.home}/energy")).status_code == 401
    await _login(c, "ben@example.com")
    for path in ("energy", "costs", "insights", "live", "tariff"):
        assert (await c.get(f"/api/v1/homes/{world.home}/{path}")).status_code == 404, path


async def test_costs_under_tou_and_dynamic_prices(world: World) -> None:
    c = world.client
    await _login(c, "ann@example.com")
    assert (await c.put(f"/api/v1/homes/{world.home}/tariff", json=TOU)).status_code == 200
    day, following = world.days[5], world.days[6]
    costs = (await c.get(f"/api/v1/homes/{world.home}/costs",
                  params={"from": day, "to": following})).json()
    line = costs["days"][day]
    assert (line["import_cost"], line["export_credit"], line["net_cost"]) == pytest.approx(
        (4.6, 0.08, 4.52))
    assert line["devices"][f"{GW}.heater"]["cost"] == pytest.approx(0.80)
    # a dynamic day: 0.10 all day but 0.50 at 18:00, posted as CSV, plus 0.05 surcharge
    lo = calendar.day_start(date.fromisoformat(day), BERLIN)
    rows = ["start,end,import_price,export_price"]
    for h in range(24):
        start, end = lo + h * 3_600_000, lo + (h + 1) * 3_600_000
        rows.append(f"{calendar.iso_utc(start)},{calendar.iso_utc(end)},"
                    f"{0.5 if h == 18 else 0.1},0.03")
    posted = await c.post(f"/api/v1/homes/{world.home}/prices", content="\n".join(rows),
                    headers={"Content-Type": "text/csv"})
    assert posted.json() == {"stored": 24}
    dyn = {"import_pricing": {"kind": "dynamic", "surcharge": 0.05},
           "feed_in": {"kind": "dynamic", "price": 0.0}}
    assert (await c.put(f"/api/v1/homes/{world.home}/tariff", json=dyn,
                 params={"valid_from": day})).status_code == 200
    line = (await c.get(f"/api/v1/homes/{world.home}/costs",
                 params={"from": day, "to": following})).json()["days"][day]
    # 13 kWh imported: 2.5 at 18:00 (incl. the heater) at 0.55, 10.5 at 0.15; 1 exported at 0.03
    assert line["import_cost"] == pytest.approx(2.5 * 0.55 + 10.5 * 0.15)
    assert line["export_credit"] == pytest.approx(0.03)
    bad = await c.put(f"/api/v1/homes/{world.home}/tariff", json={"import_pricing": {"kind": "x"}})
    assert bad.status_code == 422 and "import_pricing" in bad.json()["detail"]


async def test_insights_recommend_and_accepting_makes_one_command(world: World) -> None:
    c = world.client
    await _login(c, "ann@example.com")
    await c.put(f"/api/v1/homes/{world.home}/tariff", json=TOU)
    loads = {"items": [{"meter_device_id": f"{GW}.heater",
                        "actuator_device_id": f"{GW}.heater-switch", "label": "Water heater"}]}
    put = await c.put(f"/api/v1/homes/{world.home}/flexible-loads", json=loads)
    assert put.status_code == 200, put.text
    insights = (await c.get(f"/api/v1/homes/{world.home}/insights",
                     params={"period": "last_28_days"})).json()
    assert insights["self_sufficiency_pct"] == pytest.approx(100 / 14, abs=0.1)
    assert insights["self_consumption_pct"] == pytest.approx(50.0)
    assert insights["baseload"]["watts"] == pytest.approx(500.0)
    assert insights["top_consumers"][0]["device_id"] == "other"
    [rec] = insights["recommendations"]
    assert (rec["window"], rec["reason"]) == ({"start": "00:00", "end": "01:00"},
                                              "cheapest_hours")
    assert rec["saving_per_day"] == pytest.approx(0.40)
    accepted = await c.post(f"/api/v1/homes/{world.home}/recommendations/{rec['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    schedule = accepted.json()
    assert (schedule["on_at"], schedule["off_at"]) == ("00:00", "01:00")

    service = world.service
    assert service.commands is not None
    store = SqlAnalyticsStore(service.engine, service.store.breaker)
    registry = SqlRegistryStore(service.engine, service.store.breaker)
    runner = ScheduleRunner(store, service.commands, registry.device, lambda _h: BERLIN,
                            CommandLimits(), now_ms=service_now)
    [before] = store.schedules(world.home)
    assert runner.run_once() == 1  # due at once: the device takes the window's state now
    assert runner.run_once() == 0  # next due at the next switch time
    runner.fire(before)  # another replica firing the same switch uses the same key
    with service.engine.connect() as conn:
        rows = conn.execute(sa.select(commands.c.action, commands.c.idempotency_key).where(
            commands.c.device_id == f"{GW}.heater-switch")).all()
    wanted = "switch_on" if wants_on("00:00", "01:00", service_now(), BERLIN) else "switch_off"
    assert [(r.action, r.idempotency_key) for r in rows] == [
        (wanted, f"schedule-{before.id}-{before.next_run_ms}")]
    again = (await c.get(f"/api/v1/homes/{world.home}/insights")).json()["recommendations"][0]
    assert again["accepted"] is True


async def test_live_power_flow_from_the_latest_readings(world: World) -> None:
    c = world.client
    await _login(c, "ann@example.com")
    assert (await c.get(f"/api/v1/homes/{world.home}/live")).json()["grid_w"] is None  # all stale
    now = service_now()
    world.service.store.ingest([TelemetryBatch(gateway_id=GW, readings=[
        Reading(meter_id=m, channel="power", value=w, unit=Unit.WATT, ts=now, seq=10**8 + k)
        for k, (m, w) in enumerate((("grid", -700.0), ("pv", 3200.0), ("heater", 2000.0)))])],
        [])
    live = (await c.get(f"/api/v1/homes/{world.home}/live")).json()
    assert (live["grid_w"], live["pv_w"], live["home_w"]) == (-700.0, 3200.0, 2500.0)
    assert live["devices_w"] == {"heater": 2000.0}
