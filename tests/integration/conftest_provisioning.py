"""Helpers for the fleet-provisioning tests: CSRs carrying a claim code, and a provisioning
service on a real database with the real CA."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, NameOID

from cloud_sync.ca import CertificateAuthority
from cloud_sync.db import migrate
from cloud_sync.db.engine import make_engine
from cloud_sync.db.provisioning_store import SqlProvisioningStore
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import make_db_breaker
from cloud_sync.errors import Conflict
from cloud_sync.fakes import FakeIngestBus
from cloud_sync.ports import InboundMessage
from cloud_sync.provisioning import ProvisioningService
from cloud_sync.provisioning_rules import CREATE_FROM_CSR_TOPIC, claim_code_digest, new_claim_code

NOW = 1_800_000_000_000
TEMPLATE = "homewatt-gateway"
REGISTER_TOPIC = f"$aws/provisioning-templates/{TEMPLATE}/provision/json"


def csr_pem(key: ec.EllipticCurvePrivateKey, common_name: str, claim_code: str | None) -> str:
    with warnings.catch_warnings():  # unvalidated: tests also ask for names X.509 forbids
        warnings.simplefilter("ignore", UserWarning)
        name = x509.NameAttribute(NameOID.COMMON_NAME, common_name, _validate=False)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([name]))
    if claim_code is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, claim_code.encode())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def ensure_home(engine: sa.Engine, home_id: str) -> None:
    """Claims are for homes of the registry: make ``home_id`` exist."""
    registry = SqlRegistryStore(engine, make_db_breaker(3, 1.0))
    with contextlib.suppress(Conflict):
        registry.create_home(f"Home {home_id}", "Europe/Berlin", NOW, home_id=home_id)


@dataclass
class Harness:
    """The service on a real DB; ``now`` is its clock, ``bus`` records replies and acks."""

    store: SqlProvisioningStore
    ca: CertificateAuthority
    bus: FakeIngestBus = field(default_factory=FakeIngestBus)
    now: int = NOW
    mids: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**6)))
    service: ProvisioningService = field(init=False)

    def __post_init__(self) -> None:
        self.service = ProvisioningService(self.store, self.bus, lambda: self.ca,
                                           now_ms=lambda: self.now)

    def claim(self, home: str = "home-1", ttl_ms: int = 3_600_000) -> str:
        ensure_home(self.store.engine, home)
        code = new_claim_code()
        self.store.create_claim(home, claim_code_digest(code), expires_at=self.now + ttl_ms,
                                now=self.now)
        return code

    def send(self, topic: str, payload: bytes, *, dup: bool = False) -> tuple[str, dict]:
        """Handle one request; returns the reply's suffix and body."""
        before = len(self.bus.published)
        self.service.handle(InboundMessage(topic, payload, next(self.mids), 1, dup))
        assert len(self.bus.published) == before + 1, "exactly one reply per request"
        reply_topic, body = self.bus.published[-1]
        assert reply_topic.startswith(topic + "/")
        return reply_topic.rsplit("/", 1)[1], json.loads(body)

    def create(self, key: ec.EllipticCurvePrivateKey, cn: str,
               code: str | None) -> tuple[str, dict]:
        return self.send(CREATE_FROM_CSR_TOPIC, json.dumps(
            {"certificateSigningRequest": csr_pem(key, cn, code)}).encode())

    def register(self, token: str, serial: str, *, dup: bool = False,
                 topic: str = REGISTER_TOPIC) -> tuple[str, dict]:
        payload = json.dumps({"certificateOwnershipToken": token,
                              "parameters": {"SerialNumber": serial}}).encode()
        return self.send(topic, payload, dup=dup)


@contextmanager
def _harness(url: str, tmp_path: Path) -> Iterator[Harness]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    try:
        yield Harness(SqlProvisioningStore(engine, make_db_breaker(3, 1.0)),
                      CertificateAuthority.init(tmp_path / "ca"))
    finally:
        engine.dispose()


@pytest.fixture
def harness(db_url: str, tmp_path: Path) -> Iterator[Harness]:
    """On SQLite and PostgreSQL: for what depends on transactions and locks."""
    with _harness(db_url, tmp_path) as made:
        yield made


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Iterator[Harness]:
    """On SQLite only: for request checks that never reach a second transaction."""
    with _harness(f"sqlite:///{tmp_path / 'cloud.sqlite'}", tmp_path) as made:
        yield made
