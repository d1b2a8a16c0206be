"""The backup manifest and the engine-independent row checksum (pure)."""

from __future__ import annotations

import decimal

import pytest

from cloud_sync.backup_manifest import (
    BackupInputError,
    DumpFile,
    Manifest,
    TableDigest,
    canonical_row,
    compare,
    digest_rows,
    redact_url,
)


def test_driver_representations_of_the_same_row_encode_identically() -> None:
    # SQLite hands back bytes and ints, psycopg memoryview and bools: one canonical line
    sqlite_row = ("gw-1", 1, b"\x00\xff", 0.1, None)
    pg_row = ("gw-1", True, memoryview(b"\x00\xff"), 0.1, None)
    columns = ["id", "flag", "payload", "value", "gone"]
    assert canonical_row(columns, sqlite_row) == canonical_row(columns, pg_row)
    # column order as reflected does not matter, only names
    assert canonical_row(columns[::-1], sqlite_row[::-1]) == canonical_row(columns, sqlite_row)


def test_checksum_depends_on_every_value_and_on_row_order() -> None:
    cols = ["a", "b"]
    base = digest_rows(cols, [(1, "x"), (2, "y")])
    assert base.rows == 2
    assert digest_rows(cols, [(1, "x"), (2, "z")]).sha256 != base.sha256
    assert digest_rows(cols, [(2, "y"), (1, "x")]).sha256 != base.sha256
    assert digest_rows(cols, [(1, "x"), (2, None)]).sha256 != digest_rows(
        cols, [(1, "x"), (2, "None")]).sha256
    assert digest_rows(["d"], [(decimal.Decimal("1.50"),)]).rows == 1


def test_manifest_round_trips_through_json() -> None:
    manifest = Manifest("2026-01-01T00:00:00+00:00", "sqlite:///x", "sqlite", "0003",
                        {"readings": TableDigest(3, "ab")}, DumpFile("cloud.sqlite", 10, "cd"))
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize("text", ["not json", "{}", '{"version": 99}', "[]"])
def test_a_broken_manifest_is_bad_input_naming_the_file(text: str) -> None:
    with pytest.raises(BackupInputError, match="manifest"):
        Manifest.from_json(text)


def test_compare_reports_missing_extra_and_changed_tables() -> None:
    checks = {c.table: c for c in compare(
        {"a": TableDigest(1, "x"), "b": TableDigest(2, "y"), "c": TableDigest(1, "z")},
        {"a": TableDigest(1, "x"), "b": TableDigest(2, "Y"), "d": TableDigest(0, "w")})}
    assert [t for t, c in checks.items() if c.ok] == ["a"]
    assert checks["b"].describe() == "FAIL b: manifest 2 rows, restored 2 rows (checksum differs)"
    assert "restored absent" in checks["c"].describe()
    assert "manifest absent" in checks["d"].describe()


def test_redact_url_hides_the_password() -> None:
    assert redact_url("postgresql+psycopg://u:s3cret@h/db") == "postgresql+psycopg://u:***@h/db"
    assert redact_url("::nonsense::") == "<not a database URL>"
