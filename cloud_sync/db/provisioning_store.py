"""``SqlProvisioningStore``: claims, certificates and templates of fleet provisioning.

Each request is one transaction, and the reply is sent only after it commits. The state a
request consumes is taken by a conditional ``UPDATE ... WHERE <still free>`` whose row count
must be 1: a claim's certificate budget, an ownership token, a claim. So two replicas, or a
replay racing its original, can never both succeed, on PostgreSQL as on SQLite. A refused
request raises :class:`~cloud_sync.provisioning_rules.ProvisioningError` and its transaction
rolls back: nothing is consumed by a request that fails.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from cloud_sync.ca import IssuedCertificate
from cloud_sync.db.guarded import GuardedStore
from cloud_sync.db.schema import gateways
from cloud_sync.db.schema_provisioning import (
    certificates,
    provisioning_claims,
    provisioning_templates,
)
from cloud_sync.db.schema_registry import homes
from cloud_sync.errors import NotFound
from cloud_sync.provisioning_rules import (
    ProvisioningError,
    RegisterRequest,
    Template,
    new_token,
    token_digest,
)

__all__ = ["CertificateGrant", "SqlProvisioningStore", "StoredCertificate"]

PENDING, ACTIVE, REVOKED = "PENDING_ACTIVATION", "ACTIVE", "REVOKED"


@dataclass(frozen=True)
class CertificateGrant:
    """What create-from-csr answers; ``token`` exists only here, the DB keeps its digest."""

    certificate_id: str
    certificate_pem: str
    token: str

    def payload(self) -> dict[str, str]:
        return {"certificateId": self.certificate_id, "certificatePem": self.certificate_pem,
                "certificateOwnershipToken": self.token}


@dataclass(frozen=True)
class StoredCertificate:
    certificate_id: str
    common_name: str
    gateway_id: str | None
    home_id: str | None
    status: str
    not_after: int
    created_at: int
    activated_at: int | None


@dataclass(frozen=True)
class _Pending:
    """A pending certificate whose token a RegisterThing just took."""

    certificate_id: str
    common_name: str
    claim_id: str | None
    home_id: str | None


def _home_is_live(conn: sa.Connection, home_id: str) -> bool:
    return conn.scalar(sa.select(homes.c.id).where(homes.c.id == home_id,
                                                   homes.c.deleted_at.is_(None))) is not None


def _refuse(status: int, code: str, message: str) -> ProvisioningError:
    return ProvisioningError(status, code, message)


class SqlProvisioningStore(GuardedStore):
    # -- claims ---------------------------------------------------------------------------

    def create_claim(self, home_id: str, code_digest: str, *, expires_at: int,
                     now: int) -> str:
        """Store a claim (its code only as a digest); returns the claim's id. Raises
        ``NotFound`` for a home that does not exist (or was deleted)."""
        claim_id = secrets.token_hex(8)

        def run(conn: sa.Connection) -> str:
            if not _home_is_live(conn, home_id):
                raise NotFound(f"home {home_id!r} does not exist")
            conn.execute(provisioning_claims.insert().values(
                id=claim_id, code_digest=code_digest, home_id=home_id, created_at=now,
                expires_at=expires_at, certificates_issued=0))
            return claim_id
        return self._write(run)

    # -- create-from-csr ------------------------------------------------------------------

    def issue_certificate(self, *, claim_digest: str, common_name: str,
                          sign: Callable[[], IssuedCertificate], token_ttl_ms: int,
                          max_per_claim: int, now: int) -> CertificateGrant:
        """Spend one certificate of the claim, sign, and store the pending certificate.

        Raises ``ProvisioningError`` (403) for an unknown, used, expired or exhausted claim, or
        a name that belongs to a gateway of another home; ``StorageUnavailable``.
        """
        def run(conn: sa.Connection) -> CertificateGrant:
            claim_id, home_id = self._spend_claim(conn, claim_digest, max_per_claim, now)
            if not _home_is_live(conn, home_id):
                raise _refuse(403, "InvalidClaimCode", "the claim code's home no longer exists")
            self._check_owner(conn, common_name, home_id)
            issued = sign()
            token = new_token()
            conn.execute(certificates.insert().values(
                certificate_id=issued.certificate_id, common_name=common_name,
                claim_id=claim_id, home_id=home_id, status=PENDING, pem=issued.pem,
                not_after=issued.not_after_ms, created_at=now,
                token_digest=token_digest(token), token_expires_at=now + token_ttl_ms))
            return CertificateGrant(issued.certificate_id, issued.pem, token)
        return self._write(run)

    def _spend_claim(self, conn: sa.Connection, digest: str, max_per_claim: int,
                     now: int) -> tuple[str, str]:
        """``(claim_id, home_id)`` of the claim whose budget was spent."""
        c = provisioning_claims.c
        spent = conn.execute(
            provisioning_claims.update()
            .where(c.code_digest == digest, c.consumed_at.is_(None), c.expires_at > now,
                   c.certificates_issued < max_per_claim)
            .values(certificates_issued=c.certificates_issued + 1))
        claim = conn.execute(sa.select(c.id, c.home_id, c.consumed_at, c.expires_at,
                                       c.gateway_id).where(c.code_digest == digest)).first()
        if spent.rowcount == 1 and claim is not None:
            return str(claim.id), str(claim.home_id)
        if claim is None:
            raise _refuse(403, "InvalidClaimCode", "the claim code (the CSR's challengePassword) "
                          "is not known: check it, or ask for a new one")
        if claim.consumed_at is not None:
            raise _refuse(403, "InvalidClaimCode",
                          f"the claim code was already used (it provisioned {claim.gateway_id})")
        if claim.expires_at <= now:
            raise _refuse(403, "InvalidClaimCode", "the claim code has expired: ask for a new one")
        raise _refuse(403, "InvalidClaimCode", f"the claim code already had {max_per_claim} "
                      "certificates issued without completing provisioning: ask for a new one")

    def _gateway_home(self, conn: sa.Connection, gateway_id: str) -> str | None:
        """The home a live gateway serves (the registry's word); ``None`` when it has none or
        does not exist (a deleted gateway is revived into the new home, as the registry does)."""
        g = gateways.c
        return conn.scalar(sa.select(g.home_id).where(g.id == gateway_id,
                                                      g.deleted_at.is_(None)))

    def _check_owner(self, conn: sa.Connection, gateway_id: str, home_id: str | None) -> None:
        owner = self._gateway_home(conn, gateway_id)
        if owner is not None and owner != home_id:
            raise _refuse(403, "ProvisioningRejected",
                          f"gateway {gateway_id} belongs to another home: choose another "
                          "thing name, or have that home's owner remove it first")

    # -- RegisterThing --------------------------------------------------------------------

    def register_thing(self, request: RegisterRequest, *, request_digest: str,
                       redelivered: bool, now: int) -> dict[str, object]:
        """Activate the certificate of ``request.token`` as the thing the template names, and
        register the gateway, all in one transaction; returns the accepted payload.

        A used token is refused, except for a broker redelivery (``redelivered``) of the very
        request that used it, which gets the stored answer again (its first reply may never
        have been published). Raises ``ProvisioningError``; ``StorageUnavailable``.
        """
        def run(conn: sa.Connection) -> dict[str, object]:
            cert = self._take_token(conn, request, request_digest, redelivered, now)
            if isinstance(cert, dict):
                return cert
            template = self.template(request.template_name, conn=conn)
            if template is None or not template.enabled:
                raise _refuse(404, "ResourceNotFound",
                              f"provisioning template {request.template_name} does not exist")
            thing = template.render_thing_name(request.parameters,
                                               cert_common_name=cert.common_name,
                                               cert_id=cert.certificate_id)
            if thing != cert.common_name:
                raise _refuse(403, "ProvisioningRejected",
                              f"thing name {thing} (from the parameters) differs from the "
                              f"certificate's subject CN {cert.common_name}: they must be "
                              "equal, the CN is the gateway's MQTT identity")
            self._check_owner(conn, thing, cert.home_id)
            self._consume_claim(conn, cert.claim_id, thing, now)
            response: dict[str, object] = {
                "thingName": thing, "deviceConfiguration": dict(template.device_configuration)}
            self._activate(conn, cert.certificate_id, thing, home_id=cert.home_id,
                           request_digest=request_digest, response=response, now=now)
            return response
        return self._write(run)

    def _take_token(self, conn: sa.Connection, request: RegisterRequest, request_digest: str,
                    redelivered: bool, now: int) -> _Pending | dict[str, object]:
        c = certificates.c
        digest = token_digest(request.token)
        taken = conn.execute(certificates.update().where(
            c.token_digest == digest, c.token_used_at.is_(None), c.token_expires_at > now,
            c.status == PENDING).values(token_used_at=now))
        cert = conn.execute(sa.select(certificates).where(c.token_digest == digest)).first()
        if taken.rowcount == 1 and cert is not None:
            return _Pending(cert.certificate_id, cert.common_name, cert.claim_id, cert.home_id)
        if cert is None:
            raise _refuse(403, "InvalidCertificateOwnershipToken",
                          "certificateOwnershipToken is not known")
        if cert.token_used_at is not None:
            if redelivered and cert.register_request_digest == request_digest \
                    and cert.register_response is not None:
                stored: dict[str, object] = json.loads(cert.register_response)
                return stored
            raise _refuse(403, "InvalidCertificateOwnershipToken",
                          "certificateOwnershipToken was already used: a token provisions once; "
                          "request a new certificate")
        if cert.token_expires_at is None or cert.token_expires_at <= now:
            raise _refuse(403, "InvalidCertificateOwnershipToken",
                          "certificateOwnershipToken has expired (it lives one hour): request a "
                          "new certificate")
        raise _refuse(403, "InvalidCertificateOwnershipToken",
                      f"the certificate is {cert.status}, not pending activation")

    def _consume_claim(self, conn: sa.Connection, claim_id: str | None, gateway_id: str,
                       now: int) -> None:
        if claim_id is None:
            return
        c = provisioning_claims.c
        done = conn.execute(provisioning_claims.update()
                            .where(c.id == claim_id, c.consumed_at.is_(None))
                            .values(consumed_at=now, gateway_id=gateway_id))
        if done.rowcount != 1:
            raise _refuse(403, "InvalidClaimCode", "the claim code of this certificate was "
                          "already used by another certificate: ask for a new one")

    def _activate(self, conn: sa.Connection, certificate_id: str, gateway_id: str, *,
                  home_id: str | None, request_digest: str, response: dict[str, object],
                  now: int) -> None:
        c = certificates.c
        # the registry entry: the gateway joins the claim's home (a deleted one is revived)
        if conn.scalar(sa.select(gateways.c.id).where(gateways.c.id == gateway_id)) is None:
            conn.execute(gateways.insert().values(id=gateway_id, created_at=now,
                                                  home_id=home_id))
        else:
            conn.execute(gateways.update().where(gateways.c.id == gateway_id)
                         .values(home_id=home_id, deleted_at=None))
        # A re-provisioned gateway's older certificates are superseded.
        conn.execute(certificates.update()
                     .where(c.gateway_id == gateway_id, c.status == ACTIVE)
                     .values(status=REVOKED, revoked_at=now))
        claim = sa.select(c.claim_id).where(c.certificate_id == certificate_id).scalar_subquery()
        conn.execute(certificates.update()
                     .where(c.claim_id == claim, c.status == PENDING,
                            c.certificate_id != certificate_id)
                     .values(status=REVOKED, revoked_at=now))
        conn.execute(certificates.update().where(c.certificate_id == certificate_id).values(
            status=ACTIVE, gateway_id=gateway_id, activated_at=now,
            register_request_digest=request_digest, register_response=json.dumps(response)))

    # -- templates and queries ------------------------------------------------------------

    def template(self, name: str, *, conn: sa.Connection | None = None) -> Template | None:
        stmt = sa.select(provisioning_templates).where(provisioning_templates.c.name == name)
        row = conn.execute(stmt).first() if conn is not None else \
            self._read(lambda own: own.execute(stmt).first())
        if row is None:
            return None
        return Template(row.name, row.thing_name, json.loads(row.parameters),
                        json.loads(row.device_configuration), bool(row.enabled))

    def put_template(self, template: Template, now: int) -> bool:
        """Create or replace a template; ``True`` when it was new."""
        values = {"thing_name": template.thing_name,
                  "parameters": json.dumps(dict(template.parameters)),
                  "device_configuration": json.dumps(dict(template.device_configuration)),
                  "enabled": template.enabled}
        t = provisioning_templates

        def run(conn: sa.Connection) -> bool:
            updated = conn.execute(t.update().where(t.c.name == template.name).values(**values))
            if updated.rowcount == 1:
                return False
            conn.execute(t.insert().values(name=template.name, created_at=now, **values))
            return True
        return self._write(run)

    def certificates(self, gateway_id: str | None = None) -> list[StoredCertificate]:
        c = certificates.c
        stmt = sa.select(c.certificate_id, c.common_name, c.gateway_id, c.home_id, c.status,
                         c.not_after, c.created_at, c.activated_at).order_by(c.created_at)
        if gateway_id is not None:
            stmt = stmt.where(sa.or_(c.gateway_id == gateway_id, c.common_name == gateway_id))

        return self._read(lambda conn: [StoredCertificate(*row) for row in conn.execute(stmt)])
