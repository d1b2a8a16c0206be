"""FastAPI's side of auth: who the caller is, per request, and the per-caller rate limit.

``CurrentPrincipal`` is the dependency endpoints declare. It accepts either credential:

- ``Authorization: Bearer <JWT>`` from ``POST /api/v1/auth/token`` (apps, the web app);
- ``Authorization: Bearer hw_...`` or ``X-API-Key: hw_...`` (API consumers, scripts).

Missing, malformed, forged, expired or revoked credentials answer 401 with
``WWW-Authenticate: Bearer``; more than the per-caller limit per minute answers 429 with
``Retry-After``. Everything lives on ``app.state.auth`` (set by ``create_app``), so importing this
module connects to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from cloud_sync.auth.access import Access
from cloud_sync.auth.credentials import InvalidCredentials, split_api_key, verify_token
from cloud_sync.auth.principal import Principal
from cloud_sync.auth.rate_limit import SlidingWindowLimiter, retry_after_header

TOKEN_URL = "/api/v1/auth/token"  # noqa: S105 - a path, not a secret
_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False,
                               description="JWT from the token endpoint, or an API key")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="hw_... API key")


class PrincipalSource(Protocol):
    def principal_for_user(self, user_id: str) -> Principal | None: ...

    def principal_for_api_key(self, key_id: str, secret: str,
                              now_ms: int) -> Principal | None: ...


@dataclass
class AuthContext:
    """Built once by ``bootstrap``: where principals come from and the limits that apply."""

    principals: PrincipalSource
    access: Access
    jwt_secret: str
    token_ttl_s: int
    clock: Callable[[], float]  # wall seconds (token iat/exp, key expiry)
    limiter: SlidingWindowLimiter  # per caller, every authenticated request
    login_limiter: SlidingWindowLimiter  # per e-mail address, log-in attempts


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def auth_context(request: Request) -> AuthContext:
    ctx: AuthContext = request.app.state.auth
    return ctx


def _authenticate(ctx: AuthContext, credential: str) -> Principal:
    now = ctx.clock()
    key = split_api_key(credential)
    if key is not None:
        principal = ctx.principals.principal_for_api_key(key[0], key[1], int(now * 1000))
        if principal is None:
            raise _unauthorized("API key is unknown, revoked or expired")
        return principal
    try:
        user_id = verify_token(credential, ctx.jwt_secret, now_s=int(now))
    except InvalidCredentials as exc:
        raise _unauthorized(str(exc)) from exc
    principal = ctx.principals.principal_for_user(user_id)
    if principal is None:
        raise _unauthorized("the user of this token no longer exists")
    return principal


def current_principal(ctx: Annotated[AuthContext, Depends(auth_context)],
                      bearer: Annotated[str | None, Security(_bearer)] = None,
                      api_key: Annotated[str | None, Security(_api_key)] = None) -> Principal:
    credential = bearer or api_key
    if not credential:
        raise _unauthorized("authentication required: send 'Authorization: Bearer <token>' "
                            f"(log in at {TOKEN_URL}) or 'X-API-Key: <key>'")
    principal = _authenticate(ctx, credential)
    wait = ctx.limiter.hit(principal.subject)
    if wait is not None:
        raise HTTPException(429, f"rate limit: more than {ctx.limiter.limit} requests a "
                                 "minute; retry later",
                            headers={"Retry-After": retry_after_header(wait)})
    return principal


def current_access(ctx: Annotated[AuthContext, Depends(auth_context)]) -> Access:
    return ctx.access


CurrentAuth = Annotated[AuthContext, Depends(auth_context)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CurrentAccess = Annotated[Access, Depends(current_access)]
