"""Cloud metrics after a known workload: readings through the real ingestion worker and the
real SQLite store, command acks through the ack worker, all read back from ``GET /metrics``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloud_sync.api import ApiContext, create_app
from cloud_sync.bootstrap import build_store, load_settings
from cloud_sync.command_acks import CommandAckWorker
from cloud_sync.command_rules import CommandRequest
from cloud_sync.db import migrate
from cloud_sync.db.commands_store import CommandLimits, SqlCommandStore
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import SqlTelemetryStore, now_ms
from cloud_sync.fakes import FakeIngestBus
from cloud_sync.health import HealthChecks
from cloud_sync.ingestion import IngestionWorker
from cloud_sync.metrics import CloudMetrics, CloudSources, command_latency_observer, read_backlog
from cloud_sync.ports import InboundMessage
from protocols import encode, topics
from protocols.commands import Action, CommandAck, Outcome, Priority
from tests.auth_helpers import auth_context, headers, operator_key
from tests.integration.conftest_cloud import GW, make_batch

T0 = 1_700_000_000_000
_mids = itertools.count(1)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlTelemetryStore]:
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'cloud.sqlite'}", data_dir=tmp_path)
    built = build_store(settings)
    migrate.upgrade(built.engine)
    built.add_gateway(GW)
    yield built
    built.engine.dispose()


def message(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic, payload, mid=next(_mids), qos=1)


async def scrape(metrics: CloudMetrics, store: SqlTelemetryStore) -> str:
    health = HealthChecks(ping_db=store.ping, broker_connected=lambda: True,
                          migrated=lambda: True, worker_started=lambda: True)
    app = create_app(ApiContext(store=store, health=health, now_ms=now_ms, metrics=metrics,
                                auth=auth_context(store.engine)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers=headers(operator_key(store.engine))) as client:
        await client.get("/api/v1/gateways/nope/latest")  # one 404 for the request metric
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_ingestion_counters_equal_the_readings_sent(store: SqlTelemetryStore) -> None:
    bus = FakeIngestBus()
    worker = IngestionWorker(store, bus, queue_size=64, max_wait_s=0.0)
    metrics = CloudMetrics(CloudSources(
        ingest_stats=worker.stats.as_dict, breakers=(store.breaker,), engine=store.engine,
        backlog=lambda: read_backlog(store.engine, store.breaker),
        ingest_queue_depth=lambda: worker.queue_depth))
    telemetry = topics.telemetry(GW)
    for first in (1, 101, 201):  # 3 batches of 100 readings
        assert worker.offer(message(telemetry, encode(make_batch(first, 100))))
    assert worker.offer(message(telemetry, encode(make_batch(1, 100))))  # a resend
    assert worker.offer(message(telemetry, b"not json"))  # poison
    while worker.step(wait_s=0.0):
        pass

    values = samples(await scrape(metrics, store))

    assert values[("homewatt_ingest_readings_stored_total", ())] == 300
    assert values[("homewatt_ingest_readings_duplicate_total", ())] == 100
    assert values[("homewatt_ingest_messages_received_total", ())] == 5
    assert values[("homewatt_ingest_dead_letters_total", ())] == 1
    assert values[("homewatt_dead_letters_unreplayed", ())] == 1
    assert values[("homewatt_ingest_queue_depth", ())] == 0
    assert values[("homewatt_outbox_depth_commands", ())] == 0
    assert values[("homewatt_circuit_breaker_state", (("breaker", "database"),))] == 0
    assert values[("homewatt_db_pool_checked_out_connections", ())] == 0
    route = (("code", "404"), ("method", "GET"), ("route", "/api/v1/gateways/{gateway_id}/latest"))
    assert values[("homewatt_http_request_duration_seconds_count", route)] == 1


async def test_command_latency_is_counted_by_outcome(store: SqlTelemetryStore) -> None:
    commands = SqlCommandStore(store.engine, store.breaker)
    device, _ = SqlRegistryStore(store.engine, store.breaker).add_device(
        GW, "relay-1", 0, kind="actuator", capabilities=["switch_on", "switch_off"])
    clock = {"now": T0}
    acks = CommandAckWorker(commands, FakeIngestBus(), now_ms=lambda: clock["now"])
    metrics = CloudMetrics(CloudSources(
        ack_stats=acks.stats.as_dict, backlog=lambda: read_backlog(store.engine, store.breaker),
        now_ms=lambda: clock["now"]))
    acks.on_recorded = command_latency_observer(metrics, commands)
    request = CommandRequest(Action.SWITCH_ON, {}, 60, Priority.NORMAL)
    # four commands created at T0, acked 1.5 s later: three executed, one rejected
    created = [commands.create_command(device, f"key-{i}", request, T0, CommandLimits())[0]
               for i in range(4)]
    assert samples(metrics.render().decode())[("homewatt_outbox_depth_commands", ())] == 4
    clock["now"] = T0 + 1500
    for i, command in enumerate(created):
        outcome = Outcome.REJECTED if i == 3 else Outcome.EXECUTED
        ack = CommandAck(command_id=command.command_id, gateway_id=GW, device_id="relay-1",
                         outcome=outcome, ts=clock["now"])
        acks.handle(message(topics.commands_ack(GW), encode(ack)))
    acks.handle(message(topics.commands_ack(GW), encode(ack)))  # a repeat: not timed again

    values = samples(await scrape(metrics, store))

    def count(outcome: str, suffix: str = "count") -> float:
        return values[(f"homewatt_command_latency_seconds_{suffix}", (("outcome", outcome),))]
    assert count("executed") == 3
    assert count("rejected") == 1
    assert count("executed", "sum") == pytest.approx(4.5)
    executed_under_1s = (("le", "1.0"), ("outcome", "executed"))
    executed_under_2_5s = (("le", "2.5"), ("outcome", "executed"))
    assert values[("homewatt_command_latency_seconds_bucket", executed_under_1s)] == 0
    assert values[("homewatt_command_latency_seconds_bucket", executed_under_2_5s)] == 3
    assert values[("homewatt_command_acks_recorded_total", ())] == 4
    assert values[("homewatt_command_acks_duplicate_total", ())] == 1
    assert values[("homewatt_outbox_depth_commands", ())] == 0
