from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Mosquitto, running_mosquitto, throwaway_postgres
from tests.tls_broker import TlsBroker, running_tls_broker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker on a free port; tests may kill() and start() it."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with running_mosquitto(workdir) as broker:
        yield broker


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database, dropped after the test."""
    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """A private Mosquitto run from the generated TLS + ACL config (``tests.tls_broker``);
    ``tls_broker.identity(name)`` issues a client certificate with CN ``name``."""
    workdir = tmp_path / "tls-broker"
    workdir.mkdir()
    with running_tls_broker(workdir) as broker:
        yield broker
