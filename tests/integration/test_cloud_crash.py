"""A crash between receive and commit means redelivery, not loss (SIGKILL a real serve)."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from cloud_sync.bootstrap import build_store
from tests.auth_helpers import headers, operator_key
from tests.integration.conftest_cloud import (  # noqa: F401 - fixtures
    GW,
    Edge,
    broker,
    cloud_settings,
    db_url,
    edge,
    make_batch,
    register,
    wait_until,
)
from tests.services import Mosquitto, free_port, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@contextmanager
def serve(db_url: str, broker: Mosquitto, data_dir: Path,
          ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "HOMEWATT_DB_URL": db_url, "HOMEWATT_MQTT_URL": broker.url,
           "HOMEWATT_DATA_DIR": str(data_dir), "HOMEWATT_CLIENT_ID": "cloud-crash-test",
           "HOMEWATT_DB_STATEMENT_TIMEOUT_S": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "cloud_sync.cli", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 30)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/startupz").status_code == 200, 30, "startup")
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "ready")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)


@contextmanager
def commits_blocked(url: str) -> Iterator[None]:
    """Hold a lock that makes the service's INSERT wait (not fail) until released."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(str(make_url(url).database), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as pg:
        pg.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        yield
        pg.rollback()


def stats(base: str, api_key: str) -> dict[str, int]:
    result: dict[str, int] = httpx.get(f"{base}/api/v1/ingestion/stats",
                                       headers=headers(api_key)).json()
    return result


def test_sigkill_while_commit_is_blocked_redelivers_and_stores_once(
        db_url: str, broker: Mosquitto, tmp_path: Path, edge: Edge) -> None:
    settings = cloud_settings(db_url, broker, tmp_path)
    register(settings, GW)
    store = build_store(settings)
    key = operator_key(store.engine)  # before the lock: the stats call reads the key
    store.engine.dispose()
    with serve(db_url, broker, tmp_path) as (base, proc):
        edge.send(make_batch(1, 10))
        edge.wait_acked(GW, range(1, 11))
        with commits_blocked(db_url):
            for first in range(11, 211, 20):
                edge.send(make_batch(first, 20))
            wait_until(lambda: stats(base, key)["received"] >= 11, 20, "messages received")
            assert stats(base, key)["acked_messages"] == 1
            proc.send_signal(signal.SIGKILL)  # while its INSERT waits on the lock
            proc.wait(10)
    assert not any((GW, s) in edge.acked for s in range(11, 211))
    with serve(db_url, broker, tmp_path) as (base, _proc):
        edge.wait_acked(GW, range(11, 211), timeout=30)
        assert stats(base, key)["stored_readings"] == 200
    store = build_store(cloud_settings(db_url, broker, tmp_path))
    try:
        assert store.count_readings(GW) == 210
    finally:
        store.engine.dispose()
