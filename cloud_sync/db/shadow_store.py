"""``SqlShadowStore``: shadow documents in SQLite or PostgreSQL, one transaction per request.

A request reads its shadow's row under a lock (PostgreSQL ``FOR UPDATE`` after an upsert that
makes sure the row exists; SQLite's write lock, taken by that same upsert), applies the pure
algorithm of :mod:`protocols.shadow`, and writes the new document, so concurrent updates of one
shadow (MQTT and REST, several replicas) are serialised and each bumps the version exactly once.

The replies to publish are stored with the request's ``clientToken`` in the same transaction: a
redelivered request (the broker resends a message whose PUBACK a crash prevented) carrying the
shadow's last token gets those replies again and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloud_sync.db.guarded import GuardedStore
from cloud_sync.db.schema_shadows import shadows
from protocols.shadow import ShadowDocument

__all__ = ["Change", "Reply", "SqlShadowStore"]

S = shadows.c
Reply = tuple[str, dict[str, Any]]  # (topic, payload) to publish after the commit


@dataclass(frozen=True)
class Change:
    """What a request did: the document to store (``None``: unchanged) and the replies."""

    document: ShadowDocument | None
    replies: list[Reply]


def _name_key(name: str | None) -> str:
    return "" if name is None else name


class SqlShadowStore(GuardedStore):
    def get(self, thing: str, name: str | None) -> ShadowDocument:
        """The shadow (``exists`` False when there is none)."""
        def run(conn: sa.Connection) -> ShadowDocument:
            row = conn.execute(sa.select(shadows).where(
                S.thing_name == thing, S.shadow_name == _name_key(name))).first()
            return self._document(row)
        return self._read(run)

    def change(self, thing: str, name: str | None, client_token: str | None, now_ms: int,
               decide: Callable[[ShadowDocument], Change]) -> list[Reply]:
        """Run ``decide`` on the locked shadow and store its outcome; returns the replies.

        ``decide`` raises ``ShadowError`` to reject (nothing is written). A request whose
        ``client_token`` equals the last accepted one's gets that one's replies again.
        Raises ``StorageUnavailable``.
        """
        def run(conn: sa.Connection) -> list[Reply]:
            row = self._lock(conn, thing, _name_key(name), now_ms)
            if client_token is not None and row.last_client_token == client_token \
                    and row.last_replies is not None:
                return [(str(t), dict(p)) for t, p in json.loads(row.last_replies)]
            outcome = decide(self._document(row))
            if outcome.document is not None:
                doc = outcome.document
                conn.execute(shadows.update().where(
                    S.thing_name == thing, S.shadow_name == _name_key(name)).values(
                    version=doc.version, present=doc.exists,
                    document=doc.to_json() if doc.exists else None,
                    last_client_token=client_token,
                    last_replies=json.dumps(outcome.replies) if client_token else None,
                    updated_at=now_ms))
            return outcome.replies
        return self._write(run)

    def _lock(self, conn: sa.Connection, thing: str, name: str, now_ms: int) -> Any:
        pg = self.engine.dialect.name == "postgresql"
        insert = pg_insert if pg else sqlite_insert
        conn.execute(insert(shadows).values(
            thing_name=thing, shadow_name=name, version=0, present=False, document=None,
            updated_at=now_ms).on_conflict_do_nothing(index_elements=["thing_name",
                                                                      "shadow_name"]))
        stmt = sa.select(shadows).where(S.thing_name == thing, S.shadow_name == name)
        if pg:
            stmt = stmt.with_for_update()
        else:  # SQLite: a write takes the database lock for the rest of the transaction
            conn.execute(shadows.update().where(S.thing_name == thing, S.shadow_name == name)
                         .values(updated_at=now_ms))
        return conn.execute(stmt).one()

    @staticmethod
    def _document(row: Any) -> ShadowDocument:
        if row is None:
            return ShadowDocument()
        return ShadowDocument.from_json(row.document, int(row.version), bool(row.present))
