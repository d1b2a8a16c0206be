"""``homewatt-cloud analytics rebuild | run | status``: output, exit codes, the work done."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cloud_sync.cli import main
from cloud_sync.db.analytics_store import SqlRollupStore
from cloud_sync.db.engine import make_engine
from cloud_sync.db.store import SqlTelemetryStore, make_db_breaker
from tests.integration.conftest_analytics import RecordedHome, batches

pytestmark = pytest.mark.integration
START = 1_761_000_000_000 - 1_761_000_000_000 % 3_600_000


def test_status_run_and_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOMEWATT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HOMEWATT_DB_URL", raising=False)
    assert main(["analytics", "status"]) == 0  # migrates an empty database
    engine = make_engine(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    home = RecordedHome(seed=2, start_ms=START)
    home.run_until(START + 3_600_000)
    home.read()
    SqlTelemetryStore(engine, make_db_breaker(3, 1.0)).ingest(batches(home.readings), [])
    capsys.readouterr()
    assert main(["analytics", "status"]) == 0
    assert capsys.readouterr().out.strip().endswith("dirty marks waiting")
    assert main(["analytics", "run", "--batch", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("done: 10 series")  # 5 meters: counters and power
    rollups = SqlRollupStore(engine, make_db_breaker(3, 1.0), lambda _gw: ZoneInfo("UTC"))
    assert rollups.pending() == 0
    assert main(["analytics", "rebuild"]) == 0
    assert "marked 10 series" in capsys.readouterr().out
    assert main(["analytics", "run", "--batch", "0"]) == 2
    assert "--batch must be at least 1" in capsys.readouterr().err
    assert rollups.pending() == 10
    engine.dispose()
