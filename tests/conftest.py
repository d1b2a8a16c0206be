from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Mosquitto, running_mosquitto, throwaway_postgres


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
