"""Analytics: energy rollups from meter readings, tariffs and costs, insights and
recommendations. The maths here is pure (no I/O); storage and jobs live in
``cloud_sync.db.analytics_store`` and ``cloud_sync.analytics_jobs``."""

from cloud_sync.analytics.rollup import (
    COUNTER_CHANNELS,
    POWER_CHANNEL,
    QUARTER_MS,
    ROLLUP_SOURCE_CHANNELS,
    Bucket,
    CounterRules,
    Flag,
    Sample,
    counter_buckets,
    power_buckets,
)

__all__ = [
    "COUNTER_CHANNELS",
    "POWER_CHANNEL",
    "QUARTER_MS",
    "ROLLUP_SOURCE_CHANNELS",
    "Bucket",
    "CounterRules",
    "Flag",
    "Sample",
    "counter_buckets",
    "power_buckets",
]
