"""REST API and health probes over httpx (ASGI transport) against a real store and broker."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from cloud_sync.bootstrap import CloudService
from cloud_sync.ports import DeadLetterIn
from protocols import encode, topics
from tests.integration.conftest_cloud import (  # noqa: F401 - fixtures
    GW,
    TS0,
    api_client,
    broker,
    cloud,
    db_url,
    make_batch,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(cloud: CloudService) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cloud) as client:  # an operator: sees every gateway
        yield client


async def test_readings_are_paged_with_an_opaque_cursor(cloud: CloudService,
                                                        api: httpx.AsyncClient) -> None:
    cloud.store.ingest([make_batch(1, 25), make_batch(26, 10, channel="voltage_v")], [])
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"channel": "power_w", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        response = await api.get(f"/api/v1/gateways/{GW}/readings", params=params)
        assert response.status_code == 200
        body = response.json()
        seen += [item["seq"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(1, 26))
    assert pages == 3


async def test_readings_filter_by_time_window(cloud: CloudService, api: httpx.AsyncClient) -> None:
    cloud.store.ingest([make_batch(1, 10)], [])
    response = await api.get(f"/api/v1/gateways/{GW}/readings",
                             params={"meter": "m1", "from": TS0 + 3000, "to": TS0 + 6000})
    assert [item["seq"] for item in response.json()["items"]] == [3, 4, 5]


async def test_latest_gives_the_newest_reading_per_meter_and_channel(
        cloud: CloudService, api: httpx.AsyncClient) -> None:
    cloud.store.ingest([make_batch(1, 5), make_batch(6, 3, channel="voltage_v"),
                        make_batch(9, 2, meter="m2")], [])
    response = await api.get(f"/api/v1/gateways/{GW}/latest")
    latest = {(i["meter_id"], i["channel"]): i["seq"] for i in response.json()["items"]}
    assert latest == {("m1", "power_w"): 5, ("m1", "voltage_v"): 8, ("m2", "power_w"): 10}


async def test_unknown_gateway_is_404_with_a_json_detail(api: httpx.AsyncClient) -> None:
    for path in ("readings", "latest"):
        response = await api.get(f"/api/v1/gateways/nobody/{path}")
        assert response.status_code == 404
        assert "nobody" in response.json()["detail"]


async def test_bad_cursor_is_400(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/api/v1/gateways/{GW}/readings", params={"cursor": "!!"})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


async def test_dead_letters_are_listed_in_pages_with_text_or_base64(
        cloud: CloudService, api: httpx.AsyncClient) -> None:
    letters = [DeadLetterIn(topics.telemetry(GW), b"not json %d" % i, "not_json: x", TS0)
               for i in range(3)] + [DeadLetterIn(topics.telemetry(GW), b"\xff\x00", "x", TS0)]
    cloud.store.ingest([], letters)
    first = (await api.get("/api/v1/dead-letters", params={"limit": 3})).json()
    second = (await api.get("/api/v1/dead-letters",
                            params={"limit": 3, "cursor": first["next_cursor"]})).json()
    assert [i["payload_text"] for i in first["items"]] == ["not json 0", "not json 1",
                                                          "not json 2"]
    (binary,) = second["items"]
    assert binary["payload_text"] is None
    assert base64.b64decode(binary["payload_base64"]) == b"\xff\x00"
    assert second["next_cursor"] is None


async def test_replay_after_registering_the_gateway_stores_once(
        cloud: CloudService, api: httpx.AsyncClient) -> None:
    batch = make_batch(1, 4, gw="gw-late")
    cloud.store.ingest([], [DeadLetterIn(topics.telemetry("gw-late"), encode(batch),
                                         "unknown_gateway: gw-late", TS0)])
    (letter,) = cloud.store.dead_letters(None, 10)
    still_unknown = await api.post(f"/api/v1/dead-letters/{letter.id}/replay")
    assert still_unknown.status_code == 422
    assert "unknown_gateway" in still_unknown.json()["detail"]
    assert cloud.store.dead_letter(letter.id) is not None
    cloud.store.add_gateway("gw-late")
    first = await api.post(f"/api/v1/dead-letters/{letter.id}/replay")
    again = await api.post(f"/api/v1/dead-letters/{letter.id}/replay")
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["inserted"], again.json()["inserted"]) == (4, 0)
    assert cloud.store.count_readings("gw-late") == 4
    replayed = cloud.store.dead_letter(letter.id)
    assert replayed is not None and replayed.replayed_at is not None


async def test_replay_of_a_still_bad_payload_is_422_and_kept(
        cloud: CloudService, api: httpx.AsyncClient) -> None:
    cloud.store.ingest([], [DeadLetterIn(topics.telemetry(GW), b"{broken", "not_json: x", TS0)])
    (letter,) = cloud.store.dead_letters(None, 10)
    response = await api.post(f"/api/v1/dead-letters/{letter.id}/replay")
    assert response.status_code == 422
    assert "not_json" in response.json()["detail"]
    kept = cloud.store.dead_letter(letter.id)
    assert kept is not None and kept.replayed_at is None


async def test_replay_of_a_missing_dead_letter_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/dead-letters/999999/replay")
    assert response.status_code == 404


async def test_health_probes_report_ready_when_db_and_broker_are_up(
        api: httpx.AsyncClient) -> None:
    assert (await api.get("/livez")).status_code == 200
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"db": "ok", "broker": "ok"}
    assert (await api.get("/startupz")).status_code == 200


async def test_readyz_names_the_broker_when_it_is_down(
        api: httpx.AsyncClient, broker: Mosquitto) -> None:
    broker.kill()
    for _ in range(200):  # paho notices the closed socket asynchronously
        response = await api.get("/readyz")
        if response.status_code == 503:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 503
    assert "broker" in response.json()["detail"]
