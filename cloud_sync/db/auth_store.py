"""``SqlAuthStore``: users, their roles per home, API keys, and the principal behind each.

A principal is read fresh on every request (one small query), so a removed membership, a
deleted user or a revoked key stops working at once; nothing about permissions lives in a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cloud_sync.auth.credentials import NewApiKey, api_key_matches, new_api_key
from cloud_sync.auth.principal import Principal, Role
from cloud_sync.db.guarded import GuardedStore
from cloud_sync.db.schema_registry import api_key_scopes, api_keys, homes, memberships, users
from cloud_sync.errors import Conflict, NotFound
from cloud_sync.ports import User
from cloud_sync.registry_rules import new_id


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str
    role: Role


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as listed: never its secret."""

    id: str
    name: str
    user_id: str | None  # its creator; None for a key made with the admin CLI
    operator: bool
    homes: dict[str, Role]
    created_at: int
    expires_at: int | None
    revoked_at: int | None


def _user(row: sa.Row[Any]) -> User:
    m = row._mapping
    return User(m["id"], m["email"], m["name"], bool(m["operator"]), int(m["created_at"]))


_LIVE_USERS = sa.select(users).where(users.c.deleted_at.is_(None))


class SqlAuthStore(GuardedStore):

    # -- users -----------------------------------------------------------------------------

    def create_user(self, email: str, password_hash: str | None, now_ms: int, *,
                    name: str | None = None, operator: bool = False) -> User:
        """``email`` must already be normalised (``check_email``); ``Conflict`` if taken."""
        user = User(new_id("user"), email, name, operator, now_ms)

        def run(conn: sa.Connection) -> User:
            if conn.scalar(sa.select(users.c.id).where(users.c.email == email)) is not None:
                raise Conflict(f"a user with e-mail {email!r} exists")
            conn.execute(users.insert().values(id=user.id, email=email, name=name,
                                               password_hash=password_hash, operator=operator,
                                               created_at=now_ms))
            return user
        return self._write(run)

    def user(self, user_id: str) -> User | None:
        row = self._read(lambda c: c.execute(_LIVE_USERS.where(users.c.id == user_id)).first())
        return None if row is None else _user(row)

    def login_record(self, email: str) -> tuple[User, str | None] | None:
        """The user with that e-mail and their password hash, for log-in only."""
        row = self._read(lambda c: c.execute(_LIVE_USERS.where(users.c.email == email)).first())
        return None if row is None else (_user(row), row.password_hash)

    # -- memberships -----------------------------------------------------------------------

    def set_membership(self, user_id: str, home_id: str, role: Role, now_ms: int) -> bool:
        """Give ``user_id`` ``role`` in ``home_id``; ``False`` when it only changed a role."""
        def run(conn: sa.Connection) -> bool:
            if conn.scalar(_LIVE_USERS.with_only_columns(users.c.id)
                           .where(users.c.id == user_id)) is None:
                raise NotFound(f"user {user_id!r} does not exist")
            if conn.scalar(sa.select(homes.c.id).where(
                    homes.c.id == home_id, homes.c.deleted_at.is_(None))) is None:
                raise NotFound(f"home {home_id!r} does not exist")
            where = (memberships.c.user_id == user_id, memberships.c.home_id == home_id)
            if conn.execute(memberships.update().where(*where).values(role=role.value)).rowcount:
                return False
            conn.execute(memberships.insert().values(user_id=user_id, home_id=home_id,
                                                     role=role.value, created_at=now_ms))
            return True
        return self._write(run)

    def remove_membership(self, user_id: str, home_id: str) -> bool:
        return self._write(lambda c: bool(c.execute(memberships.delete().where(
            memberships.c.user_id == user_id, memberships.c.home_id == home_id)).rowcount))

    def members(self, home_id: str) -> list[Member]:
        stmt = (sa.select(users.c.id, users.c.email, memberships.c.role)
                .join(memberships, memberships.c.user_id == users.c.id)
                .where(memberships.c.home_id == home_id, users.c.deleted_at.is_(None))
                .order_by(users.c.email))
        return [Member(r.id, r.email, Role(r.role))
                for r in self._read(lambda c: c.execute(stmt).all())]

    def user_by_email(self, email: str) -> User | None:
        record = self.login_record(email)
        return None if record is None else record[0]

    # -- principals ------------------------------------------------------------------------

    def principal_for_user(self, user_id: str) -> Principal | None:
        """The live user with their current roles in live homes; ``None`` if deleted."""
        def run(conn: sa.Connection) -> Principal | None:
            user = conn.execute(_LIVE_USERS.where(users.c.id == user_id)).first()
            if user is None:
                return None
            stmt = (sa.select(memberships.c.home_id, memberships.c.role)
                    .join(homes, homes.c.id == memberships.c.home_id)
                    .where(memberships.c.user_id == user_id, homes.c.deleted_at.is_(None)))
            roles = {r.home_id: Role(r.role) for r in conn.execute(stmt)}
            return Principal(f"user:{user_id}", user_id, bool(user.operator), roles)
        return self._read(run)

    def principal_for_api_key(self, key_id: str, secret: str, now_ms: int) -> Principal | None:
        """The key's principal when the secret matches and it is neither revoked nor expired.

        A key made by a user is also bounded by that user: deleting the user disables it.
        """
        def run(conn: sa.Connection) -> Principal | None:
            key = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
            if key is None or not api_key_matches(secret, key.secret_sha256):
                return None
            if key.revoked_at is not None or (key.expires_at is not None
                                              and key.expires_at <= now_ms):
                return None
            if key.user_id is not None and conn.scalar(
                    _LIVE_USERS.with_only_columns(users.c.id)
                    .where(users.c.id == key.user_id)) is None:
                return None
            stmt = (sa.select(api_key_scopes.c.home_id, api_key_scopes.c.role)
                    .join(homes, homes.c.id == api_key_scopes.c.home_id)
                    .where(api_key_scopes.c.api_key_id == key_id, homes.c.deleted_at.is_(None)))
            roles = {r.home_id: Role(r.role) for r in conn.execute(stmt)}
            return Principal(f"key:{key_id}", key.user_id, bool(key.operator), roles)
        return self._read(run)

    # -- API keys --------------------------------------------------------------------------

    def create_api_key(self, name: str, now_ms: int, *, homes_roles: Mapping[str, Role],
                       operator: bool = False, user_id: str | None = None,
                       expires_at: int | None = None) -> NewApiKey:
        """Store a new key's hash and scopes; the returned plaintext is shown once.

        Raises ``NotFound`` for an unknown home."""
        key = new_api_key()

        def run(conn: sa.Connection) -> NewApiKey:
            for home_id in homes_roles:
                if conn.scalar(sa.select(homes.c.id).where(
                        homes.c.id == home_id, homes.c.deleted_at.is_(None))) is None:
                    raise NotFound(f"home {home_id!r} does not exist")
            conn.execute(api_keys.insert().values(
                id=key.key_id, name=name, secret_sha256=key.secret_sha256, user_id=user_id,
                operator=operator, created_at=now_ms, expires_at=expires_at))
            if homes_roles:
                conn.execute(api_key_scopes.insert(), [
                    {"api_key_id": key.key_id, "home_id": h, "role": r.value}
                    for h, r in homes_roles.items()])
            return key
        return self._write(run)

    def api_keys(self, user_id: str | None = None, *,
                 key_id: str | None = None) -> list[ApiKeyInfo]:
        """Keys created by ``user_id`` (``None``: every key, for operators), or the one key."""
        def run(conn: sa.Connection) -> list[ApiKeyInfo]:
            stmt = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
            if user_id is not None:
                stmt = stmt.where(api_keys.c.user_id == user_id)
            if key_id is not None:
                stmt = stmt.where(api_keys.c.id == key_id)
            rows = conn.execute(stmt).all()
            scopes: dict[str, dict[str, Role]] = {r.id: {} for r in rows}
            for s in conn.execute(sa.select(api_key_scopes).where(
                    api_key_scopes.c.api_key_id.in_(list(scopes)))):
                scopes[s.api_key_id][s.home_id] = Role(s.role)
            return [ApiKeyInfo(r.id, r.name, r.user_id, bool(r.operator), scopes[r.id],
                               int(r.created_at), r.expires_at, r.revoked_at) for r in rows]
        return self._read(run)

    def revoke_api_key(self, key_id: str, now_ms: int) -> bool:
        return self._write(lambda c: bool(c.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now_ms)).rowcount))
