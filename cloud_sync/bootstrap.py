"""The one wiring point of ``homewatt-cloud``: settings -> engine, store, broker, worker, app.

Nothing here runs at import. ``CloudService.start`` migrates in a background thread (retrying
while the database is down, so ``/livez`` answers and ``/startupz`` says why it is not done),
then connects to the broker and starts the ingestion worker.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI

from cloud_sync.analytics_wiring import build_analytics
from cloud_sync.api import ApiContext, create_app
from cloud_sync.auth import Access, AuthContext
from cloud_sync.auth.rate_limit import SlidingWindowLimiter
from cloud_sync.auth.routes import register_auth
from cloud_sync.breaker import CircuitBreaker
from cloud_sync.ca import CertificateAuthority
from cloud_sync.command_acks import CommandAckWorker
from cloud_sync.command_api import CommandApiContext
from cloud_sync.db import migrate
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.commands_store import CommandLimits, SqlCommandStore
from cloud_sync.db.engine import make_engine
from cloud_sync.db.outbox_store import SqlOutbox
from cloud_sync.db.provisioning_store import SqlProvisioningStore
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.shadow_store import SqlShadowStore
from cloud_sync.db.store import DB_ERRORS, SqlTelemetryStore, make_db_breaker, now_ms
from cloud_sync.dispatcher import CommandDispatcher
from cloud_sync.health import HealthChecks
from cloud_sync.ingestion import IngestionWorker
from cloud_sync.jobs.wiring import build_jobs
from cloud_sync.metrics import (
    Backlog,
    CloudMetrics,
    CloudSources,
    backlog_checks,
    command_latency_observer,
    read_backlog,
)
from cloud_sync.mqtt import COMMAND_ACK_FILTER, TELEMETRY_FILTER, MqttTls, PahoIngestBus
from cloud_sync.provisioning import ProvisioningPolicy, ProvisioningService
from cloud_sync.provisioning_api import ProvisioningApiContext, register_provisioning
from cloud_sync.provisioning_rules import CREATE_FROM_CSR_TOPIC, PROVISION_FILTER
from cloud_sync.registry_api import RegistryApiContext, register_registry
from cloud_sync.routing import TopicRouter
from cloud_sync.settings import CloudSettings
from cloud_sync.shadow_api import register_shadows
from cloud_sync.shadows.service import ShadowService
from cloud_sync.worker_thread import WorkerThread
from observability.health import LivenessWindow

log = logging.getLogger(__name__)


def jwt_secret(settings: CloudSettings) -> str:
    """``HOMEWATT_JWT_SECRET``, or a random one generated once into ``<data_dir>/jwt-secret``
    (mode 0600) so tokens survive a restart of a single replica."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = settings.data_dir / "jwt-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
        out.flush()
        os.fsync(out.fileno())
    log.warning("HOMEWATT_JWT_SECRET is unset: signing tokens with a generated secret in %s; "
                "set HOMEWATT_JWT_SECRET when several replicas serve the API", path)
    return path.read_text().strip()


def build_auth(settings: CloudSettings, registry: SqlRegistryStore,
               auth_store: SqlAuthStore) -> AuthContext:
    return AuthContext(
        principals=auth_store, access=Access(registry), jwt_secret=jwt_secret(settings),
        token_ttl_s=settings.token_ttl_s, clock=time.time,
        limiter=SlidingWindowLimiter(settings.api_rate_per_min, 60.0, time.monotonic),
        login_limiter=SlidingWindowLimiter(settings.login_rate_per_min, 60.0, time.monotonic))


def load_settings(**overrides: Any) -> CloudSettings:
    """Read ``HOMEWATT_*`` from the environment; ``overrides`` win (raises ValidationError)."""
    return CloudSettings(**overrides)


def build_store(settings: CloudSettings) -> SqlTelemetryStore:
    engine = make_engine(settings.effective_db_url,
                         statement_timeout_s=settings.db_statement_timeout_s,
                         connect_timeout_s=settings.db_connect_timeout_s)
    breaker = make_db_breaker(settings.db_breaker_fail_max, settings.db_breaker_reset_s)
    return SqlTelemetryStore(engine, breaker)


@dataclass
class CloudService:
    """Everything ``serve`` runs: the API app plus the ingestion worker and its broker link.

    ``services`` are further background workers (MQTT services registered on ``router``,
    scheduled jobs): started after migration and before the bus connects, so nothing they
    consume arrives before they run; stopped after the bus.
    """

    settings: CloudSettings
    store: SqlTelemetryStore
    worker: IngestionWorker
    bus: PahoIngestBus
    app: FastAPI
    commands: SqlCommandStore | None = None
    dispatcher: CommandDispatcher | None = None
    acks: CommandAckWorker | None = None
    migrated: threading.Event = field(default_factory=threading.Event)
    router: TopicRouter = field(default_factory=TopicRouter)
    services: list[WorkerThread] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _startup: threading.Thread | None = None

    @property
    def engine(self) -> sa.Engine:
        return self.store.engine

    def start(self) -> None:
        self._stop.clear()
        self._startup = threading.Thread(target=self._start_up, name="cloud-startup", daemon=True)
        self._startup.start()

    def _start_up(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                migrate.upgrade(self.engine)
                break
            except DB_ERRORS as exc:
                log.warning("migration failed (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        if self._stop.is_set():
            return
        self.migrated.set()
        self.worker.start()
        if self.acks is not None:
            self.acks.start()
        for service in self.services:
            service.start()
        self.bus.start()
        if self.dispatcher is not None and self.settings.dispatcher_enabled:
            self.dispatcher.start()
        self.started.set()
        log.info("ingestion started: db %s, broker %s", self.engine.url.render_as_string(),
                 self.settings.mqtt_url)

    def wait_started(self, timeout_s: float) -> bool:
        return self.started.wait(timeout_s)

    def stop(self) -> None:
        """Stop consuming first, then the workers; un-acked messages stay with the broker."""
        self._stop.set()
        if self._startup is not None:
            self._startup.join(10)
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.migrated.is_set():
            self.bus.stop()
        self.worker.stop()
        if self.acks is not None:
            self.acks.stop()
        for service in reversed(self.services):
            service.stop()
        self.engine.dispose()


def build_service(settings: CloudSettings) -> CloudService:
    store = build_store(settings)
    broker_breaker = CircuitBreaker(fail_max=settings.broker_breaker_fail_max,
                                              reset_timeout=settings.broker_breaker_reset_s,
                                              name="broker")
    router = TopicRouter(settings.share_group)
    # The bus subscribes to the router's filters when it connects: register every service's
    # filter before ``start`` (they are read at each CONNACK).
    host, port = settings.mqtt_host_port
    bus = PahoIngestBus(host, port, client_id=settings.client_id, sink=router.route,
                        topic_filter=lambda: router.filters,
                        receive_maximum=settings.ingest_queue_size,
                        keepalive_s=settings.mqtt_keepalive_s, breaker=broker_breaker,
                        tls=_mqtt_tls(settings))
    router.attach_acker(bus.ack)
    worker = IngestionWorker(store, bus, queue_size=settings.ingest_queue_size,
                             max_readings=settings.ingest_max_readings,
                             max_wait_s=settings.ingest_max_wait_ms / 1000,
                             retry_max_s=settings.ingest_retry_max_s)
    router.add(TELEMETRY_FILTER, worker.offer)
    command_store = SqlCommandStore(store.engine, store.breaker)
    acks = CommandAckWorker(command_store, bus, queue_size=settings.ingest_queue_size,
                            retry_max_s=settings.ingest_retry_max_s)
    router.add(COMMAND_ACK_FILTER, acks.offer)
    jobs = build_jobs(settings, store, bus, router)
    shadows = _shadows(settings, store, bus, router)
    dispatcher = CommandDispatcher(SqlOutbox(store.engine, store.breaker), bus,
                                   redelivery_s=settings.command_redelivery_s,
                                   puback_timeout_s=settings.effective_puback_timeout_s)
    services = [_provisioning(settings, store, bus, router)] if settings.provisioning_enabled \
        else []
    migrated = threading.Event()
    metrics, health = _observability(settings, store=store, bus=bus,
                                     broker_breaker=broker_breaker, worker=worker,
                                     dispatcher=dispatcher, acks=acks, migrated=migrated)
    acks.on_recorded = command_latency_observer(metrics, command_store)
    commands = CommandApiContext(
        store=command_store, now_ms=now_ms, default_ttl_s=settings.command_ttl_default_s,
        limits=CommandLimits(settings.command_rate_per_min, settings.command_queue_max),
        wake_dispatcher=dispatcher.wake,
        stats=lambda: {**dispatcher.stats.as_dict(),
                       **{f"acks_{k}": v for k, v in acks.stats.as_dict().items()}})
    registry = SqlRegistryStore(store.engine, store.breaker)
    auth_store = SqlAuthStore(store.engine, store.breaker)
    analytics_routes, analytics_workers = build_analytics(
        settings, store=store, registry=registry, commands=command_store, now_ms=now_ms,
        wake_dispatcher=dispatcher.wake, ingest_busy=lambda: worker.queue_depth > 0)
    app = create_app(ApiContext(
        store=store, health=health, now_ms=now_ms, auth=build_auth(settings, registry, auth_store),
        publish=bus.publish, stats=worker.stats.as_dict, commands=commands, metrics=metrics,
        routes=[lambda a: register_auth(a, auth_store, registry),
                lambda a: register_registry(a, RegistryApiContext(registry, auth_store, now_ms)),
                lambda a: register_provisioning(a, ProvisioningApiContext(
                    SqlProvisioningStore(store.engine, store.breaker), now_ms)),
                lambda a: register_shadows(a, shadows), analytics_routes, jobs.mount]))
    return CloudService(settings, store, worker, bus, app, command_store, dispatcher, acks,
                        migrated, router, [*services, shadows, *analytics_workers,
                                                       *jobs.workers])


def _provisioning(settings: CloudSettings, store: SqlTelemetryStore, bus: PahoIngestBus,
                  router: TopicRouter) -> WorkerThread:
    service = ProvisioningService(
        SqlProvisioningStore(store.engine, store.breaker), bus,
        lambda: CertificateAuthority.load(settings.effective_ca_dir),
        policy=ProvisioningPolicy(certificate_days=settings.provisioning_certificate_days),
        retry_max_s=settings.ingest_retry_max_s)
    router.add(CREATE_FROM_CSR_TOPIC, service.offer)
    router.add(PROVISION_FILTER, service.offer)
    return service


def _shadows(settings: CloudSettings, store: SqlTelemetryStore, bus: PahoIngestBus,
             router: TopicRouter) -> ShadowService:
    service = ShadowService(SqlShadowStore(store.engine, store.breaker), bus,
                            queue_size=settings.ingest_queue_size,
                            retry_max_s=settings.ingest_retry_max_s)
    service.register(router)
    return service


def _mqtt_tls(settings: CloudSettings) -> MqttTls | None:
    if not settings.mqtt_tls:
        return None
    return MqttTls(settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file)


def _observability(settings: CloudSettings, *, store: SqlTelemetryStore, bus: PahoIngestBus,
                   broker_breaker: CircuitBreaker, worker: IngestionWorker,
                   dispatcher: CommandDispatcher, acks: CommandAckWorker,
                   migrated: threading.Event) -> tuple[CloudMetrics, HealthChecks]:
    """Metrics and health probes over every part ``build_service`` made."""
    def backlog() -> Backlog | None:
        return read_backlog(store.engine, store.breaker) if migrated.is_set() else None
    metrics = CloudMetrics(CloudSources(
        ingest_stats=worker.stats.as_dict, dispatch_stats=dispatcher.stats.as_dict,
        ack_stats=acks.stats.as_dict, breakers=(store.breaker, broker_breaker),
        engine=store.engine, backlog=backlog, broker_connected=bus.is_connected,
        ingest_queue_depth=lambda: worker.queue_depth))
    health = HealthChecks(ping_db=store.ping, broker_connected=bus.is_connected,
                          migrated=migrated.is_set, worker_started=lambda: worker.running,
                          db_timeout_s=settings.readyz_db_timeout_s,
                          optional=backlog_checks(backlog, settings.dead_letter_backlog_max,
                                                  lambda: worker.queue_depth,
                                                  settings.ingest_queue_size),
                          liveness=LivenessWindow(settings.liveness_window_s))
    return metrics, health
