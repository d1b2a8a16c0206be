"""Rows to AWS IoT Jobs JSON (``JobExecution``, ``JobExecutionSummary``, ``JobExecutionState``).

Pure. Our rows keep epoch milliseconds; AWS's payloads carry epoch seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def seconds(ms: int | None) -> int | None:
    return None if ms is None else ms // 1000


def _details(row: Mapping[Any, Any]) -> dict[str, str] | None:
    raw = row["status_details"]
    return None if raw is None else dict(json.loads(raw))


def execution_state(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"status": row["status"], "versionNumber": int(row["version_number"])}
    details = _details(row)
    if details is not None:
        out["statusDetails"] = details
    return out


def execution_summary(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"jobId": row["job_id"], "queuedAt": seconds(row["queued_at"]),
                           "lastUpdatedAt": seconds(row["last_updated_at"]),
                           "versionNumber": int(row["version_number"]),
                           "executionNumber": int(row["execution_number"])}
    if row["started_at"] is not None:
        out["startedAt"] = seconds(row["started_at"])
    return out


def execution(row: Mapping[Any, Any], document: str | None) -> dict[str, Any]:
    """``JobExecution``; ``document`` is the job's JSON text (``None``: not included)."""
    out = {**execution_summary(row), "thingName": row["thing_name"], "status": row["status"]}
    details = _details(row)
    if details is not None:
        out["statusDetails"] = details
    if document is not None:
        out["jobDocument"] = json.loads(document)
    return out
