"""Fleet provisioning over REST: an installer (or owner) gets a home's one-time claim code, and
whoever may see a gateway lists its certificates.

``POST /api/v1/homes/{home_id}/claims`` needs the ``install`` permission in that home (owners
and installers; operators everywhere); the code is in the answer only, the database keeps its
SHA-256. A home the caller may not see answers 404, like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from cloud_sync.auth import CurrentAccess, CurrentPrincipal
from cloud_sync.db.provisioning_store import SqlProvisioningStore
from cloud_sync.provisioning_rules import claim_code_digest, new_claim_code

__all__ = ["ProvisioningApiContext", "register_provisioning"]

MAX_CLAIM_TTL_H = 24 * 30


@dataclass
class ProvisioningApiContext:
    store: SqlProvisioningStore
    now_ms: Callable[[], int]


class ClaimIn(BaseModel):
    ttl_hours: float = Field(default=24.0, gt=0, le=MAX_CLAIM_TTL_H,
                             description="how long the code stays valid")


def register_provisioning(app: FastAPI, ctx: ProvisioningApiContext) -> None:
    @app.post("/api/v1/homes/{home_id}/claims", status_code=201, tags=["provisioning"])
    def create_claim(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                     body: ClaimIn | None = None) -> dict[str, Any]:
        """A one-time claim code that provisions one gateway into this home
        (``homewatt-agent provision --claim-code``). Shown only in this answer."""
        access.require_home(principal, home_id, "install")
        ttl_h = (body or ClaimIn()).ttl_hours
        code, now = new_claim_code(), ctx.now_ms()
        expires = now + int(ttl_h * 3_600_000)
        claim_id = ctx.store.create_claim(home_id, claim_code_digest(code), expires_at=expires,
                                          now=now)
        return {"claim_id": claim_id, "claim_code": code, "home_id": home_id,
                "expires_at": expires}

    @app.get("/api/v1/gateways/{gateway_id}/certificates", tags=["provisioning"])
    def list_certificates(principal: CurrentPrincipal, access: CurrentAccess,
                          gateway_id: str) -> dict[str, Any]:
        """The gateway's certificates: status, validity (``not_after``, epoch ms)."""
        access.require_gateway(principal, gateway_id)
        # only those issued to it: a pending one of that name may be another home's attempt
        items = [asdict(c) for c in ctx.store.certificates(gateway_id)
                 if c.gateway_id == gateway_id]
        return {"items": items}
