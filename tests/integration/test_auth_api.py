"""Who may see and touch what, through the real API and database (SQLite and PostgreSQL).

Two homes hold gateways whose devices have the same local names. A user of one home gets 404 -
the very answer a missing id gets - for the other home, its gateways, readings, devices and
commands; bad, expired or forged credentials get 401; roles limit what a member or an
installer may change; a caller past the rate limit gets 429 with Retry-After.
"""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cloud_sync.auth.credentials import hash_password, issue_token
from cloud_sync.auth.principal import Role
from cloud_sync.bootstrap import CloudService, build_service, load_settings
from cloud_sync.command_rules import CommandRequest
from cloud_sync.db import migrate
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.commands_store import CommandLimits
from cloud_sync.db.registry_store import SqlRegistryStore
from protocols.commands import Action, Priority
from tests.auth_helpers import PASSWORD, TEST_JWT_SECRET, home_with_owner, operator_key
from tests.integration.conftest_cloud import db_url, make_batch  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


@dataclass
class World:
    service: CloudService
    home_a: str
    home_b: str
    b_command: str  # a command of home B's boiler

    def client(self, token: str | None = None, **headers: str) -> httpx.AsyncClient:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app),
                                 base_url="http://cloud", headers=headers)


def _service(db_url: str, tmp_path: Path, **extra: object) -> CloudService:
    settings = load_settings(db_url=db_url, data_dir=tmp_path, jwt_secret=TEST_JWT_SECRET,
                             mqtt_url="mqtt://127.0.0.1:1", **extra)
    service = build_service(settings)  # never started: the API needs only the database
    migrate.upgrade(service.engine)
    return service


def _populate(service: CloudService) -> World:
    engine = service.engine
    home_a, _ = home_with_owner(engine, "alice@example.com", "gw-a")
    home_b, _ = home_with_owner(engine, "bob@example.com", "gw-b")
    registry = SqlRegistryStore(engine, service.store.breaker)
    for gw in ("gw-a", "gw-b"):  # the same local names in both homes
        registry.add_device(gw, "grid", 0, kind="meter", capabilities=[], role="grid")
        registry.add_device(gw, "boiler", 0, kind="actuator",
                            capabilities=["switch_on", "switch_off"])
        service.store.ingest([make_batch(1, 5, gw=gw, meter="grid")], [])
    auth = SqlAuthStore(engine, service.store.breaker)
    for email, role in (("carol@example.com", Role.MEMBER), ("dave@example.com", Role.INSTALLER)):
        user = auth.create_user(email, hash_password(PASSWORD), 0)
        auth.set_membership(user.id, home_a, role, 0)
    b_device = registry.device("gw-b.boiler")
    assert b_device is not None
    assert service.commands is not None
    b_command, _ = service.commands.create_command(
        b_device, "k1", CommandRequest(Action.SWITCH_ON, {}, 60, Priority.NORMAL),
        1_790_000_000_000, CommandLimits())
    return World(service, home_a, home_b, b_command.command_id)


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    service = _service(db_url, tmp_path)
    try:
        yield _populate(service)
    finally:
        service.engine.dispose()


async def login(world: World, email: str, password: str = PASSWORD) -> httpx.Response:
    async with world.client() as client:
        return await client.post("/api/v1/auth/token",
                                 data={"username": email, "password": password})


async def token_of(world: World, email: str) -> str:
    response = await login(world, email)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    return str(body["access_token"])


@pytest.fixture
async def alice(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with world.client(await token_of(world, "alice@example.com")) as client:
        yield client


async def test_another_homes_ids_answer_404_like_ids_that_do_not_exist(
        world: World, alice: httpx.AsyncClient) -> None:
    foreign_and_missing = [
        (f"/api/v1/homes/{world.home_b}", "/api/v1/homes/home-nope"),
        (f"/api/v1/homes/{world.home_b}/devices", "/api/v1/homes/home-nope/devices"),
        (f"/api/v1/homes/{world.home_b}/gateways", "/api/v1/homes/home-nope/gateways"),
        ("/api/v1/gateways/gw-b", "/api/v1/gateways/gw-nope"),
        ("/api/v1/gateways/gw-b/readings", "/api/v1/gateways/gw-nope/readings"),
        ("/api/v1/gateways/gw-b/latest", "/api/v1/gateways/gw-nope/latest"),
        ("/api/v1/devices/gw-b.boiler", "/api/v1/devices/gw-nope.boiler"),
        (f"/api/v1/devices/gw-b.boiler/commands/{world.b_command}",
         f"/api/v1/devices/gw-nope.boiler/commands/{world.b_command}"),
        (f"/api/v1/devices/gw-a.boiler/commands/{world.b_command}",  # own device, B's command
         "/api/v1/devices/gw-a.boiler/commands/nosuchcommand"),
    ]
    for foreign, missing in foreign_and_missing:
        got, absent = await alice.get(foreign), await alice.get(missing)
        assert (got.status_code, absent.status_code) == (404, 404), foreign
        # the same sentence, only the id differs: nothing tells "exists" from "missing"
        assert got.json()["detail"].split("'")[0] == absent.json()["detail"].split("'")[0]
    command = await alice.post("/api/v1/devices/gw-b.boiler/commands",
                               json={"action": "switch_off"},
                               headers={"Idempotency-Key": uuid.uuid4().hex})
    assert command.status_code == 404
    assert world.service.commands is not None
    assert world.service.commands.count_commands("gw-b.boiler") == 1  # only B's own command


async def test_a_user_sees_and_controls_only_their_own_home(
        world: World, alice: httpx.AsyncClient) -> None:
    homes = (await alice.get("/api/v1/homes")).json()["items"]
    assert [h["id"] for h in homes] == [world.home_a]
    me = (await alice.get("/api/v1/me")).json()
    assert me["email"] == "alice@example.com"
    assert me["homes"] == [{"home_id": world.home_a, "name": "home of alice@example.com",
                            "timezone": "Europe/Berlin", "role": "owner"}]
    devices = (await alice.get(f"/api/v1/homes/{world.home_a}/devices")).json()["items"]
    assert {(d["id"], d["local_id"], d["kind"], d["role"]) for d in devices} == {
        ("gw-a.boiler", "boiler", "actuator", None), ("gw-a.grid", "grid", "meter", "grid")}
    readings = await alice.get("/api/v1/gateways/gw-a/readings")
    assert [r["seq"] for r in readings.json()["items"]] == [1, 2, 3, 4, 5]
    created = await alice.post("/api/v1/devices/gw-a.boiler/commands",
                               json={"action": "switch_on"},
                               headers={"Idempotency-Key": uuid.uuid4().hex})
    assert created.status_code == 201, created.text
    assert created.json()["local_id"] == "boiler"  # what the gateway is told


async def test_missing_bad_expired_and_forged_credentials_are_401(world: World) -> None:
    user_id = SqlAuthStore(world.service.engine, world.service.store.breaker) \
        .user_by_email("alice@example.com")
    assert user_id is not None
    now = int(time.time())
    expired = issue_token(user_id.id, TEST_JWT_SECRET, now_s=now - 7200, ttl_s=3600)
    forged = issue_token(user_id.id, "not-the-server-secret-" * 3, now_s=now, ttl_s=3600)
    cases = {"missing": world.client(), "garbage": world.client("garbage"),
             "expired": world.client(expired), "forged": world.client(forged),
             "unknown key": world.client(**{"X-API-Key": "hw_0123456789abcdef_" + "x" * 43})}
    for name, client in cases.items():
        async with client:
            response = await client.get(f"/api/v1/homes/{world.home_a}")
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = await login(world, "alice@example.com", "wrong password!")
    nobody = await login(world, "nobody@example.com")
    assert (wrong.status_code, nobody.status_code) == (401, 401)
    assert wrong.json() == nobody.json()  # no hint which of the two was wrong


async def test_roles_limit_what_members_and_installers_change(world: World) -> None:
    member = world.client(await token_of(world, "carol@example.com"))
    installer = world.client(await token_of(world, "dave@example.com"))
    meter = {"local_id": "heatpump", "kind": "meter", "role": "load"}
    add_member = {"email": "bob@example.com", "role": "member"}
    async with member, installer:
        assert (await member.get(f"/api/v1/homes/{world.home_a}/devices")).status_code == 200
        assert (await member.post("/api/v1/gateways/gw-a/devices", json=meter)).status_code \
            == 403
        assert (await member.post(f"/api/v1/homes/{world.home_a}/members",
                                  json=add_member)).status_code == 403
        first = await installer.post("/api/v1/gateways/gw-a/devices", json=meter)
        again = await installer.post("/api/v1/gateways/gw-a/devices", json=meter)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == "gw-a.heatpump"
        assert (await installer.post(f"/api/v1/homes/{world.home_a}/members",
                                     json=add_member)).status_code == 403
        assert (await installer.get("/api/v1/dead-letters")).status_code == 403
        bad = await installer.post("/api/v1/gateways/gw-a/devices",
                                   json={"local_id": "x", "kind": "meter"})
        assert bad.status_code == 422 and "role" in bad.json()["detail"]


async def test_an_owner_manages_members_and_a_removed_member_loses_access_at_once(
        world: World, alice: httpx.AsyncClient) -> None:
    async with world.client(await token_of(world, "bob@example.com")) as bob:
        assert (await bob.get(f"/api/v1/homes/{world.home_a}")).status_code == 404
        added = await alice.post(f"/api/v1/homes/{world.home_a}/members",
                                 json={"email": "bob@example.com", "role": "member"})
        assert added.status_code == 201
        assert (await bob.get(f"/api/v1/homes/{world.home_a}")).status_code == 200
        removed = await alice.delete(f"/api/v1/homes/{world.home_a}/members/"
                                     f"{added.json()['user_id']}")
        assert removed.status_code == 204
        # the same token, still unexpired: permissions are read per request, not from it
        assert (await bob.get(f"/api/v1/homes/{world.home_a}")).status_code == 404


async def test_api_keys_are_scoped_to_their_homes_and_die_when_revoked(
        world: World, alice: httpx.AsyncClient) -> None:
    refused = await alice.post("/api/v1/api-keys",
                               json={"name": "x", "homes": {world.home_b: "member"}})
    assert refused.status_code == 404
    made = await alice.post("/api/v1/api-keys",
                            json={"name": "home script", "homes": {world.home_a: "member"}})
    assert made.status_code == 201
    key = made.json()["api_key"]
    listed = (await alice.get("/api/v1/api-keys")).json()["items"]
    assert [k["id"] for k in listed] == [made.json()["id"]] and "api_key" not in listed[0]
    async with world.client(**{"X-API-Key": key}) as script, \
            world.client(key) as bearer_script:
        assert (await script.get("/api/v1/gateways/gw-a/latest")).status_code == 200
        assert (await bearer_script.get("/api/v1/gateways/gw-a/latest")).status_code == 200
        assert (await script.get("/api/v1/gateways/gw-b/latest")).status_code == 404
        assert (await alice.delete(f"/api/v1/api-keys/{made.json()['id']}")).status_code == 204
        assert (await script.get("/api/v1/gateways/gw-a/latest")).status_code == 401


async def test_soft_deleted_devices_vanish_and_can_be_registered_again(
        world: World, alice: httpx.AsyncClient) -> None:
    assert (await alice.delete("/api/v1/devices/gw-a.boiler")).status_code == 204
    assert (await alice.get("/api/v1/devices/gw-a.boiler")).status_code == 404
    assert (await alice.post("/api/v1/devices/gw-a.boiler/commands", json={"action": "switch_on"},
                             headers={"Idempotency-Key": "after-delete"})).status_code == 404
    again = await alice.post("/api/v1/gateways/gw-a/devices", json={
        "local_id": "boiler", "kind": "actuator", "capabilities": ["switch_on"]})
    assert again.status_code == 201 and again.json()["id"] == "gw-a.boiler"


async def test_operators_see_every_home_and_the_fleet_endpoints(world: World) -> None:
    key = operator_key(world.service.engine)
    async with world.client(**{"X-API-Key": key}) as ops:
        homes = {h["id"] for h in (await ops.get("/api/v1/homes")).json()["items"]}
        assert homes == {world.home_a, world.home_b}
        assert (await ops.get("/api/v1/dead-letters")).status_code == 200
        made = await ops.post("/api/v1/homes", json={"name": "New", "timezone": "Mars/Base"})
        assert made.status_code == 422 and "IANA" in made.json()["detail"]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[World]:
    service = _service(f"sqlite:///{tmp_path / 'cloud.sqlite'}", tmp_path, api_rate_per_min=5,
                       login_rate_per_min=3)
    try:
        yield _populate(service)
    finally:
        service.engine.dispose()


async def test_past_the_per_caller_limit_requests_get_429_with_retry_after(
        limited: World) -> None:
    token = await token_of(limited, "alice@example.com")
    async with limited.client(token) as alice, \
            limited.client(await token_of(limited, "bob@example.com")) as bob:
        codes = [(await alice.get("/api/v1/me")).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        over = await alice.get("/api/v1/me")
        assert over.status_code == 429 and 1 <= int(over.headers["Retry-After"]) <= 60
        assert (await bob.get("/api/v1/me")).status_code == 200  # limits are per caller
    attempts = [(await login(limited, "carol@example.com", "guess-" + str(i))).status_code
                for i in range(4)]
    assert attempts == [401, 401, 401, 429]  # guessing a password is throttled too
