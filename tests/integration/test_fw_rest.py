"""The firmware REST API as an operator and as others see it, on the real cloud app: 401
without credentials, 403 for a non-operator, validation naming the field, upload checks,
pause/resume/cancel, blocklist, and what gateways report."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cloud_sync.bootstrap import CloudService
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.store import SqlTelemetryStore, make_db_breaker
from tests.auth_helpers import headers, operator_key
from tests.fw_helpers import make_signer, signed_bundle
from tests.fw_http import run_asgi
from tests.integration.jobs_fixtures import jobs_broker, jobs_cloud

__all__ = ["jobs_broker", "jobs_cloud"]
pytestmark = pytest.mark.integration


def test_firmware_rest_api(jobs_cloud: CloudService, tmp_path: Path) -> None:
    engine = jobs_cloud.engine
    for gw in ("gw-2", "gw-3"):
        SqlTelemetryStore(engine, make_db_breaker(3, 1.0)).add_gateway(gw)
    member = SqlAuthStore(engine, make_db_breaker(3, 1.0)).create_api_key(
        "member", 0, homes_roles={}, operator=False).plaintext
    ks, _root = make_signer()  # the test cloud trusts no root: it stores what devices verify
    built = signed_bundle(tmp_path, ks, "1.1.0")
    with run_asgi(jobs_cloud.app) as port:
        base = f"http://127.0.0.1:{port}/api/v1/firmware"
        with httpx.Client(base_url=base, timeout=10) as anon:
            assert anon.get("/bundles").status_code == 401
            assert anon.get("/bundles", headers=headers(member)).status_code == 403
        with httpx.Client(base_url=base, timeout=10,
                          headers=headers(operator_key(engine))) as api:
            raw = built.manifest_path.read_bytes()
            assert api.post("/bundles", content=raw).status_code == 201
            assert api.post("/bundles", content=raw).status_code == 200
            bad = api.post("/bundles", content=b"{}")
            assert bad.status_code == 422 and bad.json()["reason"] == "malformed"
            bid = "homewatt-agent-1.1.0"
            short = api.put(f"/bundles/{bid}/payload", content=b"x" * 10)
            assert short.status_code == 422 and short.json()["reason"] == "payload_length"
            no_payload = api.post("/rollouts", json={"bundle_id": bid,
                                                     "target": {"percentage": 100}})
            assert no_payload.status_code == 409 and "no payload" in no_payload.text
            ok = api.put(f"/bundles/{bid}/payload", content=built.payload_path.read_bytes())
            assert ok.json()["status"] == "ready"
            unknown = api.put("/groups/g", json={"gateways": ["gw-1", "gw-404"]})
            assert unknown.status_code == 409 and "gw-404" in unknown.text
            assert api.put("/groups/g", json={"gateways": ["gw-1", "gw-2"]}).json() == \
                {"name": "g", "gateways": ["gw-1", "gw-2"]}
            invalid = api.post("/rollouts", json={"bundle_id": bid, "target": {
                "group": "g", "percentage": 5}})
            assert invalid.status_code == 422 and "exactly one" in invalid.text
            created = api.post("/rollouts", json={
                "bundle_id": bid, "target": {"group": "g"}, "rollout_id": "r1",
                "rate": {"base_per_minute": 1}})
            assert created.status_code == 201, created.text
            assert created.json()["notified"] == 1 and created.json()["targets"] == 2
            assert api.post("/rollouts/r1/pause").json()["status"] == "paused"
            assert api.post("/rollouts/r1/pause").json()["status"] == "paused"  # idempotent
            assert api.post("/rollouts/r1/resume").json()["status"] == "active"
            assert api.post("/rollouts/r1/launch").status_code == 404
            blocked = api.put("/blocklist/1.1.0", json={"reason": "relay chatter"})
            assert blocked.json() == {"version": "1.1.0", "canceled_rollouts": ["r1"]}
            state = api.get("/rollouts/r1").json()
            assert state["status"] == "canceled" and state["executions"] == {"CANCELED": 1}
            assert api.get("/blocklist").json()["items"] == [
                {"version": "1.1.0", "reason": "relay chatter"}]
            late = api.post("/rollouts/r1/resume")
            assert late.status_code == 409 and "canceled" in late.text
            refused = api.post("/rollouts", json={"bundle_id": bid,
                                                  "target": {"group": "g"}})
            assert refused.status_code == 409 and "blocklisted" in refused.text
            assert api.delete("/blocklist/1.1.0").status_code == 204
            assert api.delete("/blocklist/1.1.0").status_code == 404
            assert api.get("/gateways", params={"blocklisted": "true"}).json() == \
                {"items": []}
