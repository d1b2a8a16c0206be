"""The fleet-provisioning service: AWS IoT's ``CreateCertificateFromCsr`` and
``RegisterThing`` over MQTT (see :mod:`cloud_sync.provisioning_rules` for the protocol and why
the claim code travels in the CSR).

The paho network thread only calls :meth:`ProvisioningService.offer`. One worker thread answers
each request: decide and commit in one DB transaction, publish the reply (``/accepted`` or
``/rejected``), and only then PUBACK the request. A crash or a lost broker before the reply
leaves the request un-acked, so the broker redelivers it; a RegisterThing redelivery gets its
stored answer again. A malformed request gets a ``/rejected`` in AWS's error shape and is
acked: it never stops the worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from cryptography.x509 import AttributeNotFound
from cryptography.x509.oid import AttributeOID

from cloud_sync.ca import CaError, CertificateAuthority, IssuedCertificate, common_name, load_csr
from cloud_sync.db.provisioning_store import CertificateGrant
from cloud_sync.db.store import now_ms
from cloud_sync.errors import BrokerUnavailable
from cloud_sync.ports import InboundMessage, IngestBus
from cloud_sync.provisioning_rules import (
    CREATE_FROM_CSR_TOPIC,
    ProvisioningError,
    RegisterRequest,
    check_requested_name,
    claim_code_digest,
    parse_csr_request,
    parse_register_request,
    rejected_payload,
)
from cloud_sync.worker_thread import MessageWorker

__all__ = ["ProvisioningPolicy", "ProvisioningService", "ProvisioningStats"]

log = logging.getLogger(__name__)


class ProvisioningStore(Protocol):
    def issue_certificate(self, *, claim_digest: str, common_name: str,
                          sign: Callable[[], IssuedCertificate], token_ttl_ms: int,
                          max_per_claim: int, now: int) -> CertificateGrant: ...

    def register_thing(self, request: RegisterRequest, *, request_digest: str,
                       redelivered: bool, now: int) -> dict[str, object]: ...


@dataclass(frozen=True)
class ProvisioningPolicy:
    certificate_days: int = 1825
    token_ttl_s: int = 3600  # AWS: an ownership token expires after one hour
    max_certificates_per_claim: int = 5  # retries after lost replies, not a fleet per code


@dataclass
class ProvisioningStats:
    received: int = 0
    certificates_issued: int = 0
    things_registered: int = 0
    rejected: int = 0
    overflowed: int = 0
    db_failures: int = 0
    replies_unsent: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ProvisioningService(MessageWorker[ProvisioningStats]):
    thread_name = "provisioning"

    def __init__(self, store: ProvisioningStore, bus: IngestBus,
                 ca: Callable[[], CertificateAuthority], *,
                 policy: ProvisioningPolicy | None = None, queue_size: int = 64,
                 retry_max_s: float = 5.0, now_ms: Callable[[], int] = now_ms) -> None:
        """``ca`` loads the CA when first needed (a missing CA rejects requests with 503 and
        says how to create one; it is retried on the next request)."""
        super().__init__(queue_size=queue_size, retry_max_s=retry_max_s)
        self._store = store
        self._bus = bus
        self._load_ca = ca
        self._ca: CertificateAuthority | None = None
        self.policy = policy or ProvisioningPolicy()
        self._now_ms = now_ms
        self.stats = ProvisioningStats()

    def handle(self, message: InboundMessage) -> None:
        """Answer one request, then PUBACK it. Raises ``StorageUnavailable`` (not acked)."""
        accepted, payload = self.answer(message)
        suffix = "accepted" if accepted else "rejected"
        try:
            self._bus.publish(f"{message.topic}/{suffix}", payload)
        except BrokerUnavailable as exc:
            # Not acked: the broker redelivers the request with the session.
            self.stats.replies_unsent += 1
            log.warning("provisioning reply not published (%s); awaiting redelivery", exc)
            return
        try:
            self._bus.ack(message)
        except BrokerUnavailable as exc:
            log.warning("PUBACK of a provisioning request not sent (%s)", exc)

    def answer(self, message: InboundMessage) -> tuple[bool, bytes]:
        """``(accepted, payload)`` for one request, after its transaction committed."""
        try:
            if message.topic == CREATE_FROM_CSR_TOPIC:
                grant = self._create_from_csr(message.payload)
                self.stats.certificates_issued += 1
                log.info("certificate %s issued", grant.certificate_id)
                return True, json.dumps(grant.payload()).encode()
            response = self._register(message)
            self.stats.things_registered += 1
            log.info("thing %s provisioned", response.get("thingName"))
            return True, json.dumps(response).encode()
        except ProvisioningError as error:
            self.stats.rejected += 1
            log.info("provisioning request on %s rejected: %s", message.topic, error)
            return False, rejected_payload(error)

    def _create_from_csr(self, payload: bytes) -> CertificateGrant:
        pem = parse_csr_request(payload)
        try:
            csr = load_csr(pem)
        except CaError as exc:
            raise ProvisioningError(400, "InvalidCertificateSigningRequest", str(exc)) from exc
        name = check_requested_name(common_name(csr))
        try:
            code = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
        except AttributeNotFound as exc:
            raise ProvisioningError(403, "InvalidClaimCode",
                                    "the CSR carries no claim code: put the installer's claim "
                                    "code in its challengePassword attribute") from exc
        ca = self._ca_or_refuse()
        days = self.policy.certificate_days
        return self._store.issue_certificate(
            claim_digest=claim_code_digest(bytes(code).decode(errors="replace")),
            common_name=name, sign=lambda: ca.sign_csr(csr, common_name=name, days=days),
            token_ttl_ms=self.policy.token_ttl_s * 1000,
            max_per_claim=self.policy.max_certificates_per_claim, now=self._now_ms())

    def _register(self, message: InboundMessage) -> dict[str, object]:
        request = parse_register_request(message.topic, message.payload)
        digest = hashlib.sha256(message.topic.encode() + b"\0" + message.payload).hexdigest()
        return self._store.register_thing(request, request_digest=digest,
                                          redelivered=message.dup, now=self._now_ms())

    def _ca_or_refuse(self) -> CertificateAuthority:
        if self._ca is None:
            try:
                self._ca = self._load_ca()
            except CaError as exc:
                log.error("cannot provision: %s", exc)
                raise ProvisioningError(503, "ServiceUnavailable",
                                        "provisioning is not set up on the cloud (no CA): its "
                                        "operator must run `homewatt-cloud ca init`") from exc
        return self._ca
