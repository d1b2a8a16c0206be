"""Building awsiotsdk's MQTT 5 client (``mqtt5_client_builder.mtls_from_path``), as AWS IoT Core
expects devices to connect, for the AWS IoT transport and for fleet provisioning.

awscrt runs its own event-loop threads and calls back on them; callers bridge those callbacks
into asyncio themselves. Errors from awscrt (a missing or mismatched certificate or key file)
become :class:`AwsIotError` naming the config keys to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awscrt import mqtt5
from awscrt.exceptions import AwsCrtError
from awsiot import mqtt5_client_builder

from edge_agent.errors import EdgeAgentError

__all__ = ["AwsIotError", "MtlsEndpoint", "build_client", "crt_error"]

# awscrt refuses a keepalive that is not above its PINGRESP timeout.
_MAX_PING_TIMEOUT_MS = 30_000


class AwsIotError(EdgeAgentError):
    """awscrt failed: bad TLS files, or an operation the broker refused."""


def crt_error(exc: BaseException) -> str:
    """One readable line for an awscrt exception (its name and description)."""
    if isinstance(exc, AwsCrtError):
        return f"{exc.name}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class MtlsEndpoint:
    host: str
    port: int
    cert_file: Path
    key_file: Path
    ca_file: Path | None  # None: the system's trust store (AWS IoT Core's Amazon Root CA)


def build_client(endpoint: MtlsEndpoint, *, client_id: str, keepalive_s: int = 30,
                 session_expiry_s: int | None = None, will: mqtt5.PublishPacket | None = None,
                 reconnect_min_s: float = 1.0, reconnect_max_s: float = 120.0,
                 **callbacks: Callable[[Any], None]) -> mqtt5.Client:
    """An mTLS MQTT 5 client, not yet started. ``session_expiry_s`` set: the session is kept
    across reconnects (``REJOIN_ALWAYS``), else each connection is clean. ``callbacks`` are
    the builder's ``on_*`` keyword arguments. Raises ``AwsIotError``."""
    ping_timeout_ms = min(_MAX_PING_TIMEOUT_MS, keepalive_s * 500)
    options: dict[str, Any] = {
        "endpoint": endpoint.host, "port": endpoint.port,
        "cert_filepath": str(endpoint.cert_file), "pri_key_filepath": str(endpoint.key_file),
        "client_id": client_id, "keep_alive_interval_sec": keepalive_s,
        "ping_timeout_ms": ping_timeout_ms,
        "min_reconnect_delay_ms": int(reconnect_min_s * 1000),
        "max_reconnect_delay_ms": int(max(reconnect_max_s, reconnect_min_s) * 1000),
        # a fleet that lost its broker together must not reconnect in lockstep
        "retry_jitter_mode": mqtt5.ExponentialBackoffJitterMode.FULL,
        # QoS 1 publishes made while offline wait for the next connection, like paho's
        "offline_queue_behavior":
            mqtt5.ClientOperationQueueBehaviorType.FAIL_NON_QOS1_PUBLISH_ON_DISCONNECT,
        **callbacks,
    }
    if endpoint.ca_file is not None:
        options["ca_filepath"] = str(endpoint.ca_file)
    if session_expiry_s is not None:
        options["session_behavior"] = mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS
        options["session_expiry_interval_sec"] = session_expiry_s
    if will is not None:
        options["will"] = will
    try:
        return mqtt5_client_builder.mtls_from_path(**options)
    except (AwsCrtError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise AwsIotError(f"mqtt.cert_file / key_file / ca_file: cannot set up mutual TLS: "
                          f"{crt_error(exc)}") from exc
