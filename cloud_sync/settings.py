"""The one settings object of the cloud service (``HOMEWATT_`` environment variables).

Built by :func:`cloud_sync.bootstrap.load_settings`; nothing reads the environment at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_CHARS = 32
PLACEHOLDER_SECRETS = frozenset({
    "changeme", "change-me", "secret", "password", "your-secret-here", "please-change-me",
    "changeme-changeme-changeme-changeme", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"})


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "homewatt-cloud"


class CloudSettings(BaseSettings):
    """Every knob of ``homewatt-cloud``; each is ``HOMEWATT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="HOMEWATT_", extra="ignore")

    db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means sqlite:///<data_dir>/cloud.sqlite (WAL). "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    mqtt_url: str = Field(default="mqtt://127.0.0.1:1883",
                          description="mqtt://host:1883 plain, or mqtts://host:8883 TLS")
    # TLS (mqtts://): trust for the broker's certificate (unset: the system's CAs) and the
    # cloud's client certificate and key (its CN is the cloud identity the broker ACL names).
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    # The CA that signs gateway certificates (fleet provisioning, broker-config).
    ca_dir: Path | None = Field(default=None, description="unset: <data_dir>/ca")
    # Fleet provisioning by claim: a replica without the CA key sets this false.
    provisioning_enabled: bool = True
    provisioning_certificate_days: int = Field(default=1825, ge=1, le=7300)
    data_dir: Path = Field(default_factory=_default_data_dir)
    share_group: str | None = Field(
        default=None, description="Consume via $share/<group>/hw/+/telemetry so replicas split load"
    )
    client_id: str = "homewatt-cloud-ingest"
    # Database: every call is bounded by these, and a breaker turns repeated failures into
    # fast 503s instead of piled-up requests.
    db_statement_timeout_s: float = Field(default=5.0, gt=0)
    db_connect_timeout_s: float = Field(default=3.0, gt=0)
    db_breaker_fail_max: int = Field(default=3, ge=1)
    db_breaker_reset_s: float = Field(default=5.0, gt=0)
    broker_breaker_fail_max: int = Field(default=5, ge=1)
    broker_breaker_reset_s: float = Field(default=5.0, gt=0)
    readyz_db_timeout_s: float = Field(default=1.0, gt=0)
    # /livez fails once /readyz has failed continuously this long (a wedged process restarts);
    # more unreplayed dead letters than this make /readyz report "degraded" (still 200).
    liveness_window_s: float = Field(default=120.0, gt=0)
    dead_letter_backlog_max: int = Field(default=1000, ge=0)
    # Ingestion grouping: one DB transaction holds up to this many readings or waits this long.
    ingest_max_readings: int = Field(default=5000, ge=1)
    ingest_max_wait_ms: int = Field(default=50, ge=0)
    # The in-process queue of received, un-acked messages; also sent as MQTT 5 Receive
    # Maximum. Brokers that ignore it (Mosquitto 2.0.11 after the first acks) may overrun it:
    # refused messages stay un-acked and the session is resumed to have them resent.
    ingest_queue_size: int = Field(default=512, ge=1, le=65535)
    ingest_retry_max_s: float = Field(default=5.0, gt=0)
    mqtt_keepalive_s: int = Field(default=30, ge=5)
    # Commands: per-device rate limit (429), per-gateway bound on open commands (503); safety
    # priority bypasses both. An un-acked command is re-published every redelivery period
    # until it expires. An API-only replica turns the dispatcher off (it still records acks).
    command_rate_per_min: int = Field(default=10, ge=1)
    command_queue_max: int = Field(default=20, ge=1)
    command_redelivery_s: float = Field(default=10.0, gt=0)
    command_ttl_default_s: int = Field(default=60, ge=1, le=86_400)
    # On PostgreSQL claimed outbox rows stay locked while the dispatcher waits for PUBACKs,
    # and an ack for one of them waits on that lock: the wait used is capped at half of
    # db_statement_timeout_s (see ``effective_puback_timeout_s``).
    command_puback_timeout_s: float = Field(default=2.0, gt=0)
    dispatcher_enabled: bool = True
    # Analytics: the rollup job (dirty series -> 15-min/hourly/daily energy) and the schedule
    # job (accepted recommendations -> commands). Every replica may run both: claims keep
    # them apart. An API-only replica turns them off.
    analytics_jobs_enabled: bool = True
    analytics_interval_s: float = Field(default=30.0, gt=0)
    # Observability: spans go to no exporter (the no-op API tracer), stderr, or OTLP/HTTP at
    # tracing_otlp_endpoint (unset: the SDK's OTEL_EXPORTER_OTLP_* defaults). `serve` logs JSON
    # lines (with trace ids) unless log_format is "text".
    # Firmware: payloads live in firmware_dir (shared storage when replicas run); devices
    # download them from public_url; uploaded manifests must verify against the trust root
    # the devices ship (firmware_trust_root), so the cloud never offers what they refuse.
    firmware_dir: Path | None = None  # default: <data_dir>/firmware
    public_url: str = "http://127.0.0.1:8080"
    firmware_trust_root: Path | None = None
    rollout_tick_s: float = Field(default=5.0, gt=0)
    # Auth: access tokens are HS256 JWTs signed with jwt_secret. Unset, a random secret is
    # generated once into <data_dir>/jwt-secret (fine for one replica; replicas must share one,
    # so set it in production). Per caller at most api_rate_per_min requests a minute (429 with
    # Retry-After past it); log-in attempts per e-mail address are limited separately.
    jwt_secret: SecretStr | None = None
    token_ttl_s: int = Field(default=3600, ge=60, le=7 * 86_400)
    api_rate_per_min: int = Field(default=1000, ge=1)
    login_rate_per_min: int = Field(default=10, ge=1)
    tracing_exporter: Literal["none", "console", "otlp"] = "none"
    tracing_otlp_endpoint: str | None = None
    log_format: Literal["json", "text"] = "json"

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value()
        if len(text) < MIN_SECRET_CHARS or text.lower() in PLACEHOLDER_SECRETS \
                or len(set(text)) < 8:
            raise ValueError(
                f"use at least {MIN_SECRET_CHARS} random characters (placeholders are refused), "
                "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> CloudSettings:
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("HOMEWATT_MQTT_CERT_FILE and HOMEWATT_MQTT_KEY_FILE go together: "
                             "set both or neither")
        tls_files = (self.mqtt_ca_file, self.mqtt_cert_file)
        if not self.mqtt_tls and any(f is not None for f in tls_files):
            raise ValueError("HOMEWATT_MQTT_CA_FILE/CERT_FILE/KEY_FILE need an mqtts:// "
                             "HOMEWATT_MQTT_URL")
        return self

    @field_validator("db_url")
    @classmethod
    def _db_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be sqlite:///path or postgresql+psycopg://user@host/db")
        return value

    @property
    def effective_puback_timeout_s(self) -> float:
        return min(self.command_puback_timeout_s, self.db_statement_timeout_s / 2)

    @property
    def effective_db_url(self) -> str:
        """The URL actually used: ``db_url`` or the SQLite file under ``data_dir``."""
        return self.db_url or f"sqlite:///{self.data_dir / 'cloud.sqlite'}"

    @property
    def effective_firmware_dir(self) -> Path:
        return self.firmware_dir or self.data_dir / "firmware"

    @property
    def mqtt_tls(self) -> bool:
        return urlsplit(self.mqtt_url).scheme == "mqtts"

    @property
    def mqtt_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.mqtt_url)
        return parts.hostname or "127.0.0.1", parts.port or (8883 if self.mqtt_tls else 1883)

    @property
    def effective_ca_dir(self) -> Path:
        return self.ca_dir or self.data_dir / "ca"
