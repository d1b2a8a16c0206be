"""Fleet provisioning by claim against a real database (SQLite, PostgreSQL) and the real CA:
the happy path, every refusal, replays and redeliveries, and a DB outage."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest modules and used as arguments

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cloud_sync.ca import certificate_id
from cloud_sync.db.engine import make_engine
from cloud_sync.db.provisioning_store import SqlProvisioningStore
from cloud_sync.db.schema import gateways
from cloud_sync.db.schema_provisioning import certificates, provisioning_claims
from cloud_sync.db.schema_registry import homes
from cloud_sync.db.store import make_db_breaker
from cloud_sync.errors import StorageUnavailable
from cloud_sync.ports import InboundMessage
from cloud_sync.provisioning_rules import CREATE_FROM_CSR_TOPIC
from tests.integration.conftest_cloud import db_url  # noqa: F401 - fixture
from tests.integration.conftest_provisioning import (  # noqa: F401 - fixture
    REGISTER_TOPIC,
    Harness,
    harness,
    sqlite_harness,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _rows(h: Harness, table: sa.Table) -> list[sa.Row]:
    with h.store.engine.connect() as conn:
        return list(conn.execute(sa.select(table)))


def test_claim_csr_and_template_provision_a_gateway(harness: Harness) -> None:
    key = _key()
    outcome, grant = harness.create(key, "gw-0042", harness.claim("home-7"))
    assert outcome == "accepted"
    cert = x509.load_pem_x509_certificate(grant["certificatePem"].encode())
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(harness.ca.cert)
    assert grant["certificateId"] == certificate_id(cert)
    assert _rows(harness, certificates)[0].status == "PENDING_ACTIVATION"

    outcome, reply = harness.register(grant["certificateOwnershipToken"], "0042")
    assert (outcome, reply) == ("accepted", {"thingName": "gw-0042", "deviceConfiguration": {}})
    (stored,) = _rows(harness, certificates)
    assert (stored.status, stored.gateway_id, stored.home_id) == ("ACTIVE", "gw-0042", "home-7")
    assert [(g.id, g.home_id) for g in _rows(harness, gateways)] == [("gw-0042", "home-7")]
    (claim,) = _rows(harness, provisioning_claims)
    assert claim.consumed_at == harness.now and claim.gateway_id == "gw-0042"
    # replies were sent only with the commit behind them, and every request was acked
    assert harness.bus.acked == [1, 2]
    # secrets are stored as digests only
    assert grant["certificateOwnershipToken"] not in repr(stored)


def test_replayed_ownership_token_is_refused(harness: Harness) -> None:
    _, grant = harness.create(_key(), "gw-1", harness.claim())
    token = grant["certificateOwnershipToken"]
    assert harness.register(token, "1")[0] == "accepted"
    outcome, error = harness.register(token, "1")
    assert outcome == "rejected"
    assert (error["statusCode"], error["errorCode"]) == (403, "InvalidCertificateOwnershipToken")
    assert "already used" in error["errorMessage"]


def test_broker_redelivery_of_the_same_request_gets_the_same_answer(harness: Harness) -> None:
    """A reply lost with the broker: the request comes back with DUP set, un-acked."""
    _, grant = harness.create(_key(), "gw-1", harness.claim())
    token = grant["certificateOwnershipToken"]
    first = harness.register(token, "1")
    assert harness.register(token, "1", dup=True) == first
    # DUP with another body is a replay, not a redelivery
    assert harness.register(token, "2", dup=True)[0] == "rejected"


def test_concurrent_replays_register_once(harness: Harness) -> None:
    _, grant = harness.create(_key(), "gw-1", harness.claim())
    payload = json.dumps({"certificateOwnershipToken": grant["certificateOwnershipToken"],
                          "parameters": {"SerialNumber": "1"}}).encode()
    results: list[str] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        accepted, _body = harness.service.answer(InboundMessage(REGISTER_TOPIC, payload, 1, 1))
        results.append("accepted" if accepted else "rejected")
    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results) == ["accepted", "rejected", "rejected", "rejected"]


def test_a_claim_code_provisions_one_gateway(harness: Harness) -> None:
    code = harness.claim()
    _, grant = harness.create(_key(), "gw-1", code)
    harness.register(grant["certificateOwnershipToken"], "1")
    outcome, error = harness.create(_key(), "gw-2", code)
    assert outcome == "rejected" and error["errorCode"] == "InvalidClaimCode"
    assert "already used (it provisioned gw-1)" in error["errorMessage"]


@pytest.mark.parametrize(("code", "problem"), [
    (None, "carries no claim code"),
    ("ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ", "is not known"),
])
def test_csr_without_a_valid_claim_gets_no_certificate(sqlite_harness: Harness, code: str | None,
                                                       problem: str) -> None:
    outcome, error = sqlite_harness.create(_key(), "gw-1", code)
    assert outcome == "rejected" and error["statusCode"] == 403 and problem in error["errorMessage"]
    assert _rows(sqlite_harness, certificates) == []


def test_expired_claim_and_expired_token_are_refused(sqlite_harness: Harness) -> None:
    code = sqlite_harness.claim(ttl_ms=1000)
    sqlite_harness.now += 1000
    assert "expired" in sqlite_harness.create(_key(), "gw-1", code)[1]["errorMessage"]
    _, grant = sqlite_harness.create(_key(), "gw-2", sqlite_harness.claim())
    sqlite_harness.now += 3600 * 1000
    outcome, error = sqlite_harness.register(grant["certificateOwnershipToken"], "2")
    assert outcome == "rejected" and "expired" in error["errorMessage"]


def test_thing_name_must_match_the_certificate_and_a_refusal_consumes_nothing(
        harness: Harness) -> None:
    _, grant = harness.create(_key(), "gw-1", harness.claim())
    token = grant["certificateOwnershipToken"]
    outcome, error = harness.register(token, "999")
    assert outcome == "rejected" and error["errorCode"] == "ProvisioningRejected"
    assert "gw-999" in error["errorMessage"] and "gw-1" in error["errorMessage"]
    assert harness.register(token, "bad serial!")[1]["errorCode"] == "InvalidParameters"
    missing = "$aws/provisioning-templates/nope/provision/json"
    assert harness.register(token, "1", topic=missing)[1]["statusCode"] == 404
    # nothing was consumed by the refusals: the right request still works
    assert harness.register(token, "1")[0] == "accepted"


def test_another_homes_gateway_name_is_refused(harness: Harness) -> None:
    _, grant = harness.create(_key(), "gw-1", harness.claim("home-a"))
    harness.register(grant["certificateOwnershipToken"], "1")
    outcome, error = harness.create(_key(), "gw-1", harness.claim("home-b"))
    assert outcome == "rejected" and "belongs to another home" in error["errorMessage"]
    # the same home may re-provision it (a replaced SD card); the old certificate is superseded
    _, again = harness.create(_key(), "gw-1", harness.claim("home-a"))
    assert harness.register(again["certificateOwnershipToken"], "1")[0] == "accepted"
    assert sorted(r.status for r in _rows(harness, certificates)) == ["ACTIVE", "REVOKED"]


def test_a_claim_of_a_deleted_home_gets_no_certificate(sqlite_harness: Harness) -> None:
    code = sqlite_harness.claim("home-gone")
    with sqlite_harness.store.engine.begin() as conn:
        conn.execute(homes.update().where(homes.c.id == "home-gone").values(deleted_at=1))
    outcome, error = sqlite_harness.create(_key(), "gw-1", code)
    assert outcome == "rejected" and "home no longer exists" in error["errorMessage"]


@pytest.mark.parametrize(("payload", "code"), [
    (b"\xff\xfe", "InvalidPayload"),
    (b'{"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\\nAAAA"}',
     "InvalidCertificateSigningRequest"),
])
def test_malformed_requests_are_rejected_and_acked(sqlite_harness: Harness, payload: bytes,
                                                   code: str) -> None:
    outcome, error = sqlite_harness.send(CREATE_FROM_CSR_TOPIC, payload)
    assert (outcome, error["statusCode"], error["errorCode"]) == ("rejected", 400, code)
    assert sqlite_harness.bus.acked == [1]


@pytest.mark.parametrize("name", ["homewatt+claim", "gw/1", "x" * 65])
def test_csr_may_not_ask_for_a_service_identity_or_invalid_name(sqlite_harness: Harness,
                                                                name: str) -> None:
    outcome, error = sqlite_harness.create(_key(), name, sqlite_harness.claim())
    assert outcome == "rejected" and error["errorCode"] == "InvalidCertificateSigningRequest"


def test_unsent_reply_leaves_the_request_unacked(sqlite_harness: Harness) -> None:
    code = sqlite_harness.claim()
    sqlite_harness.bus.connected = False
    sqlite_harness.service.handle(InboundMessage(CREATE_FROM_CSR_TOPIC, b"{}", 7, 1))
    assert sqlite_harness.bus.acked == [] and sqlite_harness.service.stats.replies_unsent == 1
    sqlite_harness.bus.connected = True
    assert sqlite_harness.create(_key(), "gw-1", code)[0] == "accepted"


def test_database_outage_sends_no_reply_and_no_ack(sqlite_harness: Harness, tmp_path) -> None:
    dead = make_engine(f"sqlite:///{tmp_path}/missing-dir/x.sqlite")
    sqlite_harness.service._store = SqlProvisioningStore(dead, make_db_breaker(3, 1.0))
    with pytest.raises(StorageUnavailable):
        sqlite_harness.create(_key(), "gw-1", sqlite_harness.claim())
    assert sqlite_harness.bus.published == [] and sqlite_harness.bus.acked == []
