"""homewatt's cloud service: telemetry ingestion over MQTT, storage, REST and health."""

from cloud_sync.errors import CloudSyncError
from cloud_sync.settings import CloudSettings

__all__ = ["CloudSettings", "CloudSyncError"]
