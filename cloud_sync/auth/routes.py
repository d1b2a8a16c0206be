"""Log-in, the caller's own identity, and API keys.

- ``POST /api/v1/auth/token``: OAuth2 password flow (form fields ``username`` = e-mail,
  ``password``) -> ``{"access_token", "token_type": "bearer", "expires_in"}``; wrong e-mail or
  password 401 (one message for both); too many attempts for one address 429 + Retry-After.
- ``GET /api/v1/me``: who the credential belongs to and its homes with roles.
- ``POST /api/v1/api-keys`` ``{"name", "homes": {home_id: role}, "expires_in_days"}`` -> 201 with
  the key, shown once; a key gets at most the roles its creator holds. ``GET /api/v1/api-keys``
  lists the caller's keys (all keys for operators), ``DELETE /api/v1/api-keys/{id}`` revokes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Form, HTTPException
from pydantic import BaseModel, Field

from cloud_sync.auth.access import require_operator
from cloud_sync.auth.credentials import NewApiKey, issue_token, verify_password
from cloud_sync.auth.deps import TOKEN_URL, CurrentAuth, CurrentPrincipal
from cloud_sync.auth.principal import Principal, Role
from cloud_sync.auth.rate_limit import retry_after_header
from cloud_sync.db.auth_store import ApiKeyInfo
from cloud_sync.errors import BadInput, Forbidden, NotFound
from cloud_sync.ports import Home, User
from cloud_sync.registry_rules import check_name

MAX_KEY_DAYS = 3650


class AuthStore(Protocol):
    def login_record(self, email: str) -> tuple[User, str | None] | None: ...

    def user(self, user_id: str) -> User | None: ...

    def create_api_key(self, name: str, now_ms: int, *, homes_roles: dict[str, Role],
                       operator: bool = False, user_id: str | None = None,
                       expires_at: int | None = None) -> NewApiKey: ...

    def api_keys(self, user_id: str | None = None, *,
                 key_id: str | None = None) -> list[ApiKeyInfo]: ...

    def revoke_api_key(self, key_id: str, now_ms: int) -> bool: ...


class HomeNames(Protocol):
    def homes(self, home_ids: list[str] | None) -> list[Home]: ...


class ApiKeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    homes: dict[str, Role] = Field(default_factory=dict)
    operator: bool = False
    expires_in_days: int | None = Field(default=None, ge=1, le=MAX_KEY_DAYS)


def _key_json(key: ApiKeyInfo) -> dict[str, Any]:
    return asdict(key)


def register_auth(app: FastAPI, store: AuthStore, homes: HomeNames) -> None:
    @app.post(TOKEN_URL, tags=["auth"])
    def token(ctx: CurrentAuth, username: Annotated[str, Form()],
              password: Annotated[str, Form()]) -> dict[str, Any]:
        email = username.strip().lower()
        wait = ctx.login_limiter.hit(email)
        if wait is not None:
            raise HTTPException(429, "too many log-in attempts for this address; retry later",
                                headers={"Retry-After": retry_after_header(wait)})
        record = store.login_record(email)
        if record is None or not verify_password(password, record[1]):
            raise HTTPException(401, "wrong e-mail or password",
                                headers={"WWW-Authenticate": "Bearer"})
        access = issue_token(record[0].id, ctx.jwt_secret, now_s=int(ctx.clock()),
                             ttl_s=ctx.token_ttl_s)
        return {"access_token": access, "token_type": "bearer", "expires_in": ctx.token_ttl_s}

    @app.get("/api/v1/me", tags=["auth"])
    def me(principal: CurrentPrincipal) -> dict[str, Any]:
        user = store.user(principal.user_id) if principal.user_id else None
        visible = homes.homes(None if principal.operator else principal.home_ids)
        return {"subject": principal.subject, "user_id": principal.user_id,
                "email": user.email if user else None, "operator": principal.operator,
                "homes": [{"home_id": h.id, "name": h.name, "timezone": h.timezone,
                           "role": principal.homes[h.id].value if h.id in principal.homes
                           else None} for h in visible]}

    _register_keys(app, store)


def _register_keys(app: FastAPI, store: AuthStore) -> None:
    @app.post("/api/v1/api-keys", status_code=201, tags=["auth"])
    def create_key(ctx: CurrentAuth, principal: CurrentPrincipal,
                   body: ApiKeyRequest) -> dict[str, Any]:
        _check_grant(principal, body)
        now_ms = int(ctx.clock() * 1000)
        expires = (now_ms + body.expires_in_days * 86_400_000) if body.expires_in_days else None
        key = store.create_api_key(check_name("name", body.name), now_ms,
                                   homes_roles=dict(body.homes), operator=body.operator,
                                   user_id=principal.user_id, expires_at=expires)
        info = store.api_keys(key_id=key.key_id)[0]
        return {**_key_json(info), "api_key": key.plaintext}

    @app.get("/api/v1/api-keys", tags=["auth"])
    def list_keys(principal: CurrentPrincipal) -> dict[str, Any]:
        if principal.operator:
            keys = store.api_keys()
        elif principal.user_id is not None:
            keys = store.api_keys(principal.user_id)
        else:
            keys = []  # an admin-made home key has made no keys
        return {"items": [_key_json(k) for k in keys]}

    @app.delete("/api/v1/api-keys/{key_id}", status_code=204, tags=["auth"])
    def revoke_key(ctx: CurrentAuth, principal: CurrentPrincipal, key_id: str) -> None:
        found = store.api_keys(key_id=key_id)
        if not found or not (principal.operator or
                             (principal.user_id and found[0].user_id == principal.user_id)):
            raise NotFound(f"API key {key_id!r} does not exist")
        store.revoke_api_key(key_id, int(ctx.clock() * 1000))


def _check_grant(principal: Principal, body: ApiKeyRequest) -> None:
    if body.operator:
        require_operator(principal)
    if not body.operator and not body.homes:
        raise BadInput("homes: give at least one {home_id: role} (or operator: true)")
    for home_id, role in body.homes.items():
        if not principal.may(home_id, "read"):
            raise NotFound(f"home {home_id!r} does not exist")
        if not principal.can_grant(home_id, role):
            raise Forbidden(f"homes.{home_id}: you cannot grant '{role.value}' there")
