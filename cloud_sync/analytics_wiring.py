"""Wires analytics into the service: the API routes, the web app and the two jobs.

Called once from ``bootstrap.build_service``; returns the routes to register on the app and
the workers ``CloudService`` starts after migration (none on a replica with
``analytics_jobs_enabled=false``).
"""

from __future__ import annotations

from collections.abc import Callable
from zoneinfo import ZoneInfo

from fastapi import FastAPI

from cloud_sync.analytics import calendar
from cloud_sync.analytics_api import register_analytics
from cloud_sync.analytics_context import AnalyticsApiContext
from cloud_sync.analytics_jobs import RollupJob, RollupWorker
from cloud_sync.analytics_schedules import CommandMaker, ScheduleRunner, ScheduleWorker
from cloud_sync.db.analytics_queries import SqlAnalyticsStore
from cloud_sync.db.analytics_store import SqlRollupStore
from cloud_sync.db.analytics_zones import GatewayZones
from cloud_sync.db.commands_store import CommandLimits
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import SqlTelemetryStore
from cloud_sync.settings import CloudSettings
from cloud_sync.webapp import mount_webapp
from cloud_sync.worker_thread import WorkerThread


def build_analytics(settings: CloudSettings, *, store: SqlTelemetryStore,
                    registry: SqlRegistryStore, commands: CommandMaker,
                    now_ms: Callable[[], int], wake_dispatcher: Callable[[], None],
                    ingest_busy: Callable[[], bool] = lambda: False,
                    ) -> tuple[Callable[[FastAPI], None], list[WorkerThread]]:
    """``ingest_busy`` tells the rollup job that telemetry is waiting to be stored."""
    zones = GatewayZones(store.engine)
    rollups = RollupWorker(RollupJob(SqlRollupStore(store.engine, store.breaker, zones),
                                     zones=zones.zones), settings.analytics_interval_s,
                           busy=ingest_busy)
    analytics = SqlAnalyticsStore(store.engine, store.breaker)

    def home_zone(home_id: str) -> ZoneInfo:
        home = registry.home(home_id)
        return calendar.zone(home.timezone if home else "UTC")

    schedules = ScheduleWorker(ScheduleRunner(
        analytics, commands, registry.device, home_zone,
        CommandLimits(settings.command_rate_per_min, settings.command_queue_max),
        now_ms=now_ms, wake=wake_dispatcher), settings.analytics_interval_s)
    context = AnalyticsApiContext(store=analytics, registry=registry, latest=store.latest,
                                  now_ms=now_ms, wake_schedules=schedules.wake)

    def routes(app: FastAPI) -> None:
        register_analytics(app, context)
        mount_webapp(app)

    return routes, [rollups, schedules] if settings.analytics_jobs_enabled else []
