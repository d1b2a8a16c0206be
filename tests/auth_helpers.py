"""Credentials for tests: API keys and users made straight in the database, as the admin CLI
does, so tests can call the authenticated API."""

from __future__ import annotations

import time

import sqlalchemy as sa

from cloud_sync.auth import Access, AuthContext
from cloud_sync.auth.credentials import hash_password
from cloud_sync.auth.principal import Role
from cloud_sync.auth.rate_limit import SlidingWindowLimiter
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import make_db_breaker

PASSWORD = "correct horse battery"
TEST_JWT_SECRET = "test-secret-" + "0123456789abcdef" * 3


def _stores(engine: sa.Engine) -> tuple[SqlRegistryStore, SqlAuthStore]:
    breaker = make_db_breaker(3, 1.0)
    return SqlRegistryStore(engine, breaker), SqlAuthStore(engine, breaker)


def operator_key(engine: sa.Engine) -> str:
    """A fleet-wide API key (the schema must be migrated)."""
    _registry, auth = _stores(engine)
    return auth.create_api_key("tests", 0, homes_roles={}, operator=True).plaintext


def headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key}


def home_with_owner(engine: sa.Engine, email: str, *gateways: str,
                    timezone: str = "Europe/Berlin") -> tuple[str, str]:
    """A home holding ``gateways`` (registered or assigned) and its owner, who logs in with
    :data:`PASSWORD`; ``(home_id, user_id)``."""
    registry, auth = _stores(engine)
    home = registry.create_home(f"home of {email}", timezone, 0)
    user = auth.create_user(email, hash_password(PASSWORD), 0)
    auth.set_membership(user.id, home.id, Role.OWNER, 0)
    for gateway_id in gateways:
        registry.add_gateway(gateway_id, 0, home_id=home.id)
    return home.id, user.id


def auth_context(engine: sa.Engine, *, rate_per_min: int = 1000) -> AuthContext:
    """What ``bootstrap`` gives ``create_app``, for tests that build the app themselves."""
    registry, auth = _stores(engine)
    return AuthContext(principals=auth, access=Access(registry), jwt_secret=TEST_JWT_SECRET,
                       token_ttl_s=3600, clock=time.time,
                       limiter=SlidingWindowLimiter(rate_per_min, 60.0, time.monotonic),
                       login_limiter=SlidingWindowLimiter(10, 60.0, time.monotonic))
