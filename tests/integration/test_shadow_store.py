"""``SqlShadowStore`` under concurrent writers (what several cloud replicas and the REST API do to
one shadow), on SQLite and PostgreSQL: every accepted update gets its own version, none is lost."""

# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments
from __future__ import annotations

import threading

import pytest

from cloud_sync.db import migrate
from cloud_sync.db.engine import make_engine
from cloud_sync.db.shadow_store import Change, SqlShadowStore
from cloud_sync.db.store import make_db_breaker
from cloud_sync.errors import StorageUnavailable
from protocols.shadow import ShadowDocument, UpdateRequest, apply_update
from tests.integration.conftest_cloud import db_url  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
WRITERS, EACH = 6, 20


def test_concurrent_updates_of_one_shadow_each_get_a_version(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    store = SqlShadowStore(engine, make_db_breaker(50, 1.0))
    versions: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(EACH):
            request = UpdateRequest({"reported": {f"w{n}": i}}, client_token=f"{n}-{i}")

            def decide(doc: ShadowDocument, request: UpdateRequest = request) -> Change:
                outcome = apply_update(doc, request, 1_795_000_000)
                return Change(outcome.document, [("t", {"version": outcome.document.version})])
            for _attempt in range(50):  # SQLite may time out a writer under contention
                try:
                    replies = store.change("gw-1", "boiler", request.client_token, 0, decide)
                    break
                except StorageUnavailable:
                    continue
            with lock:
                versions.append(int(replies[0][1]["version"]))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    doc = store.get("gw-1", "boiler")
    engine.dispose()
    assert sorted(versions) == list(range(1, WRITERS * EACH + 1))  # none lost, none twice
    assert doc.version == WRITERS * EACH
    assert doc.reported == {f"w{n}": EACH - 1 for n in range(WRITERS)}
