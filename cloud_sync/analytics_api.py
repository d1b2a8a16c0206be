"""The analytics API: a home's energy, costs, insights, live power, tariff and schedules.

Every route first checks the caller may see the home (``cloud_sync.auth``; another home's id
answers 404). Reads need ``read``; accepting a recommendation or removing a schedule needs
``control``; the tariff and posted prices need ``manage``; flexible loads ``install``. Ranges
are ``period=...`` or ``from``/``to`` in the home's time zone (``cloud_sync.analytics.periods``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from cloud_sync.analytics import calendar
from cloud_sync.analytics.costs import cost_report
from cloud_sync.analytics.home import MeterRole
from cloud_sync.analytics.periods import BadPeriod, parse_instant, resolve
from cloud_sync.analytics.recommend import FlexibleLoad
from cloud_sync.analytics.report import RESOLUTIONS, item, to_csv, totals
from cloud_sync.analytics.schedule import next_switch
from cloud_sync.analytics.tariffs import (
    PricePoint,
    TariffError,
    check_points,
    parse_price_csv,
    parse_tariff,
)
from cloud_sync.analytics_context import AnalyticsApiContext, buckets_for, meters_of, price_book
from cloud_sync.analytics_insights import insights_json, recommendations_for
from cloud_sync.auth import CurrentAccess, CurrentPrincipal
from cloud_sync.db.analytics_queries import Schedule
from cloud_sync.errors import NotFound
from cloud_sync.ports import Device, Home, StoredReading

Period = Annotated[str | None, Query(description="today, yesterday, month, last_month, "
                                     "last_7_days, last_28_days or year")]
From = Annotated[str | None, Query(alias="from", description="local date, ISO time or ms")]
To = Annotated[str | None, Query(alias="to", description="exclusive; like from")]


class FlexibleLoadIn(BaseModel):
    meter_device_id: str = Field(description="the load meter (registry id) measuring it")
    actuator_device_id: str = Field(description="the switch (registry id) controlling it")
    label: str = Field(min_length=1, max_length=64)


class FlexibleLoadsIn(BaseModel):
    items: list[FlexibleLoadIn] = Field(max_length=50)


def _range(ctx: AnalyticsApiContext, home: Home, period: str | None, from_: str | None,
           to: str | None, *, default: str = "today") -> tuple[int, int]:
    return resolve(period, from_, to, ctx.now_ms(), ZoneInfo(home.timezone), default=default)


def register_analytics(app: FastAPI, ctx: AnalyticsApiContext) -> None:
    _register_errors(app)
    _register_energy(app, ctx)
    _register_money(app, ctx)
    _register_plans(app, ctx)


def _register_errors(app: FastAPI) -> None:
    @app.exception_handler(BadPeriod)
    @app.exception_handler(TariffError)
    async def bad_input(_req: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)


def _register_energy(app: FastAPI, ctx: AnalyticsApiContext) -> None:
    @app.get("/api/v1/homes/{home_id}/energy", tags=["analytics"])
    def energy(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,  # noqa: PLR0917
               period: Period = None, from_: From = None, to: To = None,
               resolution: Annotated[str, Query(description="15m, hour, day or month")] = "hour",
               format: Annotated[str, Query(description="json or csv")] = "json",
               ) -> Any:
        home = access.require_home(principal, home_id)
        if resolution not in RESOLUTIONS:
            raise BadPeriod(f"resolution: {resolution!r} is not one of {', '.join(RESOLUTIONS)}")
        if format not in ("json", "csv"):
            raise BadPeriod(f"format: {format!r} is not json or csv")
        lo, hi = _range(ctx, home, period, from_, to)
        buckets, meters = buckets_for(ctx, home, resolution, lo, hi)
        tz = ZoneInfo(home.timezone)
        items = [item(b, resolution, tz) for b in buckets]
        if format == "csv":
            loads = sorted(m.device_id for m in meters if m.role == "load")
            name = f"energy-{home.id}-{calendar.day_of(lo, tz)}-{resolution}.csv"
            return Response(to_csv(items, loads), media_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return {"home_id": home.id, "timezone": home.timezone, "resolution": resolution,
                "from": calendar.iso_local(lo, tz), "to": calendar.iso_local(hi, tz),
                "items": items, "totals": totals(buckets)}

    @app.get("/api/v1/homes/{home_id}/live", tags=["analytics"])
    def live(principal: CurrentPrincipal, access: CurrentAccess, home_id: str) -> dict[str, Any]:
        access.require_home(principal, home_id)
        return _live(ctx, meters_of(ctx.registry.devices(home_id=home_id)))


def _live(ctx: AnalyticsApiContext, meters: list[MeterRole]) -> dict[str, Any]:
    """Power now: grid (+ import), PV, home = grid + PV, each load meter; stale values out."""
    now = ctx.now_ms()
    power: dict[tuple[str, str], StoredReading] = {}
    for gateway_id in sorted({m.gateway_id for m in meters}):
        for r in ctx.latest(gateway_id):
            if r.channel == "power" and r.value is not None and now - r.ts <= ctx.live_stale_ms:
                power[(gateway_id, r.meter_id)] = r
    out: dict[str, Any] = {"grid_w": None, "pv_w": None, "home_w": None, "devices_w": {},
                           "ts_ms": max((r.ts for r in power.values()), default=None)}
    for m in meters:
        reading = power.get((m.gateway_id, m.meter_id))
        if reading is None or reading.value is None:
            continue
        if m.role == "load":
            out["devices_w"][m.name or m.device_id] = reading.value
        else:
            key = "grid_w" if m.role == "grid" else "pv_w"
            out[key] = (out[key] or 0.0) + (abs(reading.value) if m.role == "pv"
                                            else reading.value)
    if out["grid_w"] is not None or out["pv_w"] is not None:
        out["home_w"] = max(0.0, (out["grid_w"] or 0.0) + (out["pv_w"] or 0.0))
    return out


def _register_money(app: FastAPI, ctx: AnalyticsApiContext) -> None:
    @app.get("/api/v1/homes/{home_id}/costs", tags=["analytics"])
    def costs(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,  # noqa: PLR0917
              period: Period = None, from_: From = None, to: To = None) -> dict[str, Any]:
        home = access.require_home(principal, home_id)
        lo, hi = _range(ctx, home, period, from_, to)
        buckets, _meters = buckets_for(ctx, home, "15m", lo, hi)
        report = cost_report(buckets, price_book(ctx, home, lo, hi), lo, hi)
        return {"home_id": home.id, "currency": report.currency,
                "tariff": bool(ctx.store.tariffs(home.id)),
                "days": {d: line.as_dict() for d, line in report.days.items()},
                "months": {m: line.as_dict() for m, line in report.months.items()},
                "total": report.total.as_dict()}

    @app.get("/api/v1/homes/{home_id}/tariff", tags=["analytics"])
    def get_tariff(principal: CurrentPrincipal, access: CurrentAccess,
                   home_id: str) -> dict[str, Any]:
        home = access.require_home(principal, home_id)
        tz = ZoneInfo(home.timezone)
        return {"items": [{"valid_from": calendar.iso_local(v, tz), "valid_from_ms": v,
                           "tariff": t.model_dump()} for v, t in ctx.store.tariffs(home.id)]}

    @app.put("/api/v1/homes/{home_id}/tariff", tags=["analytics"])
    def put_tariff(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                   body: Annotated[dict[str, Any], Body()],
                   valid_from: Annotated[str | None, Query()] = None) -> dict[str, Any]:
        """The tariff in effect from ``valid_from`` (default: the start of time, i.e. it
        prices all history until a later tariff takes over)."""
        home = access.require_home(principal, home_id, "manage")
        tariff = parse_tariff(body)
        start = 0 if valid_from is None else parse_instant("valid_from", valid_from,
                                                            ZoneInfo(home.timezone))
        ctx.store.set_tariff(home.id, start, tariff)
        return {"valid_from_ms": start, "tariff": tariff.model_dump()}

    @app.post("/api/v1/homes/{home_id}/prices", tags=["analytics"])
    async def post_prices(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                          request: Request) -> dict[str, Any]:
        """A dynamic price series: JSON ``{"items": [{"start", "end", "import_price",
        "export_price"}]}`` (ms or ISO times) or CSV (``Content-Type: text/csv``)."""
        home = access.require_home(principal, home_id, "manage")
        raw = (await request.body()).decode("utf-8", errors="replace")
        if request.headers.get("content-type", "").startswith("text/csv"):
            points = parse_price_csv(raw)
        else:
            points = _json_points(raw, ZoneInfo(home.timezone))
        return {"stored": ctx.store.put_prices(home.id, points)}


def _json_points(raw: str, tz: ZoneInfo) -> list[PricePoint]:
    try:
        items = json.loads(raw)["items"]
        points = [PricePoint(parse_instant(f"items.{n}.start", str(i["start"]), tz),
                             parse_instant(f"items.{n}.end", str(i["end"]), tz),
                             float(i["import_price"]),
                             None if i.get("export_price") is None else float(i["export_price"]))
                  for n, i in enumerate(items)]
    except (ValueError, KeyError, TypeError) as exc:
        raise TariffError('items: send {"items": [{"start": ..., "end": ..., '
                          f'"import_price": ...}}]}} ({exc})') from exc
    check_points(points)
    return points


def _schedule_json(s: Schedule, tz: ZoneInfo) -> dict[str, Any]:
    return {"id": s.id, "device_id": s.device_id, "on_at": s.on_at, "off_at": s.off_at,
            "active": s.active, "next_run": calendar.iso_local(s.next_run_ms, tz),
            "recommendation": s.recommendation}


def _register_plans(app: FastAPI, ctx: AnalyticsApiContext) -> None:
    @app.get("/api/v1/homes/{home_id}/insights", tags=["analytics"])
    def insights(principal: CurrentPrincipal, access: CurrentAccess,  # noqa: PLR0917
                 home_id: str, period: Period = None, from_: From = None,
                 to: To = None) -> dict[str, Any]:
        home = access.require_home(principal, home_id)
        lo, hi = _range(ctx, home, period, from_, to, default="last_28_days")
        return insights_json(ctx, home, lo, hi)

    _register_schedules(app, ctx)


def _check_loads(devices: list[Device], body: FlexibleLoadsIn) -> list[FlexibleLoad]:
    known = {d.id: d for d in devices}
    for n, f in enumerate(body.items):
        meter, actuator = known.get(f.meter_device_id), known.get(f.actuator_device_id)
        if meter is None or meter.kind != "meter":
            raise TariffError(f"items.{n}.meter_device_id: no meter {f.meter_device_id!r} "
                              "in this home")
        if actuator is None or "switch_on" not in actuator.capabilities:
            raise TariffError(f"items.{n}.actuator_device_id: no switchable device "
                              f"{f.actuator_device_id!r} in this home")
    return [FlexibleLoad(f.meter_device_id, f.actuator_device_id, f.label) for f in body.items]


def _register_schedules(app: FastAPI, ctx: AnalyticsApiContext) -> None:
    @app.put("/api/v1/homes/{home_id}/flexible-loads", tags=["analytics"])
    def put_loads(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                  body: FlexibleLoadsIn) -> dict[str, Any]:
        access.require_home(principal, home_id, "install")
        ctx.store.set_flexible_loads(home_id,
                                     _check_loads(ctx.registry.devices(home_id=home_id), body))
        return {"items": [f.model_dump() for f in body.items]}

    @app.post("/api/v1/homes/{home_id}/recommendations/{rec_id}/accept", tags=["analytics"])
    def accept(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
               rec_id: str) -> dict[str, Any]:
        home = access.require_home(principal, home_id, "control")
        tz = ZoneInfo(home.timezone)
        lo, hi = _range(ctx, home, None, None, None, default="last_28_days")
        rec = next((r for r in recommendations_for(ctx, home, lo, hi) if r.id == rec_id), None)
        if rec is None:
            raise NotFound(f"recommendation {rec_id!r} is not (or no longer) recommended")
        now = ctx.now_ms()
        schedule = ctx.store.create_schedule(
            home.id, rec.actuator_device_id, on_at=rec.start, off_at=rec.end,
            recommendation={"id": rec.id, "explanation": rec.explanation(),
                            "saving_per_month": round(rec.saving_per_month, 4)},
            now_ms=now, next_run_ms=now)  # due at once: the device takes the window's state
        ctx.wake_schedules()
        out = _schedule_json(schedule, tz)
        out["next_switch"] = calendar.iso_local(next_switch(rec.start, rec.end, now, tz), tz)
        return out

    @app.get("/api/v1/homes/{home_id}/schedules", tags=["analytics"])
    def list_schedules(principal: CurrentPrincipal, access: CurrentAccess,
                       home_id: str) -> dict[str, Any]:
        home = access.require_home(principal, home_id)
        tz = ZoneInfo(home.timezone)
        return {"items": [_schedule_json(s, tz) for s in ctx.store.schedules(home.id)]}

    @app.delete("/api/v1/homes/{home_id}/schedules/{schedule_id}", status_code=204,
                tags=["analytics"])
    def delete_schedule(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                        schedule_id: str) -> None:
        access.require_home(principal, home_id, "control")
        if not ctx.store.deactivate_schedule(home_id, schedule_id):
            raise NotFound(f"schedule {schedule_id!r} is not active in this home")
