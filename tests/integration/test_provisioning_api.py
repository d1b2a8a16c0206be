"""Claim codes and certificates over REST, through the real app, auth and database (SQLite):
an installer gets a working code for their home, another home answers 404, a member 403."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cloud_sync.auth.principal import Role
from cloud_sync.bootstrap import CloudService, build_service, load_settings
from cloud_sync.ca import CertificateAuthority
from cloud_sync.db import migrate
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.provisioning_store import SqlProvisioningStore
from cloud_sync.db.store import make_db_breaker
from tests.auth_helpers import TEST_JWT_SECRET, headers, home_with_owner
from tests.integration.conftest_provisioning import Harness

pytestmark = pytest.mark.integration


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[CloudService, dict[str, str]]]:
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'cloud.sqlite'}",
                             data_dir=tmp_path, jwt_secret=TEST_JWT_SECRET,
                             mqtt_url="mqtt://127.0.0.1:1")
    service = build_service(settings)  # never started: the API needs only the database
    migrate.upgrade(service.engine)
    home_a, _ = home_with_owner(service.engine, "a@example.com")
    home_b, _ = home_with_owner(service.engine, "b@example.com")
    auth = SqlAuthStore(service.engine, make_db_breaker(3, 1.0))
    keys = {"installer": auth.create_api_key("installer", 0,
                                             homes_roles={home_a: Role.INSTALLER}).plaintext,
            "member": auth.create_api_key("member", 0,
                                          homes_roles={home_a: Role.MEMBER}).plaintext,
            "home_a": home_a, "home_b": home_b}
    try:
        yield service, keys
    finally:
        service.engine.dispose()


def client(service: CloudService, key: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app),
                             base_url="http://cloud", headers=headers(key) if key else {})


async def test_installer_gets_a_claim_code_that_provisions_into_their_home(
        world: tuple[CloudService, dict[str, str]], tmp_path: Path) -> None:
    service, keys = world
    async with client(service, keys["installer"]) as api:
        made = await api.post(f"/api/v1/homes/{keys['home_a']}/claims", json={"ttl_hours": 2})
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["home_id"] == keys["home_a"] and len(body["claim_code"]) == 23
        other = await api.post(f"/api/v1/homes/{keys['home_b']}/claims")
        assert other.status_code == 404  # existence of another home never leaks
        assert (await api.post(f"/api/v1/homes/{keys['home_a']}/claims",
                               json={"ttl_hours": 0})).status_code == 422
    # the code works: a gateway provisioned with it joins home A, and its certificate is listed
    store = SqlProvisioningStore(service.engine, make_db_breaker(3, 1.0))
    harness = Harness(store, CertificateAuthority.init(tmp_path / "ca"))
    harness.now = body["expires_at"] - 1000
    _, grant = harness.create(ec.generate_private_key(ec.SECP256R1()), "gw-7",
                              body["claim_code"])
    assert harness.register(grant["certificateOwnershipToken"], "7")[0] == "accepted"
    async with client(service, keys["member"]) as api:
        listed = await api.get("/api/v1/gateways/gw-7/certificates")
        assert listed.status_code == 200
        (cert,) = listed.json()["items"]
        assert (cert["status"], cert["home_id"]) == ("ACTIVE", keys["home_a"])
        assert "pem" not in json.dumps(cert)  # listing shows status, not material
        # a member sees the home but may not add gateways to it
        refused = await api.post(f"/api/v1/homes/{keys['home_a']}/claims")
        assert refused.status_code == 403


async def test_claims_need_credentials(world: tuple[CloudService, dict[str, str]]) -> None:
    service, keys = world
    async with client(service) as api:
        assert (await api.post(f"/api/v1/homes/{keys['home_a']}/claims")).status_code == 401
