"""``doctor`` checks that talk to something: every configured meter, and the MQTT broker.

The meter check reads each Modbus meter once with the agent's own reader (so it fails for
exactly the reasons polling would); the broker check opens a real MQTT session (TCP, TLS
with the configured files, CONNECT/CONNACK) under the client id ``<gateway>-doctor`` so a
running agent's persistent session is left alone.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Mapping

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.clock import SystemClock
from edge_agent.config import AgentConfig, MeterSettings
from edge_agent.doctor import Check, Status
from edge_agent.meter_reader import MeterReader
from edge_agent.ports import ModbusBus
from edge_agent.uplink import UplinkError, parse_broker_url
from protocols.models import Quality

__all__ = ["check_broker", "check_meters"]

_WIRING_FIX = ("check the bus wiring (A to A, B to B; swap A/B if nothing answers), the "
               "120 ohm termination at both ends, the unit id set on the meter, and that "
               "baudrate/parity match the meter's menu")


async def check_meters(config: AgentConfig, buses: Mapping[str, ModbusBus]) -> list[Check]:
    """One read of every meter, meters on one bus one after the other."""
    checks = []
    for meter in config.meters:
        if meter.model == "s0" or meter.bus is None:
            pin = meter.s0.pin if meter.s0 else "?"
            checks.append(Check(f"meter {meter.id}", Status.SKIP,
                                f"S0 pulse input on GPIO{pin}: counted while the agent runs"))
            continue
        checks.append(await _meter(meter, buses[meter.bus]))
    return checks


async def _meter(meter: MeterSettings, bus: ModbusBus) -> Check:
    name = f"meter {meter.id}"
    reader = MeterReader(meter, bus, SystemClock())
    readings = await reader.read()
    if reader.last_error is not None:
        # Our bus says "bus <name>: cannot connect to ..." when the port itself is the problem.
        unopened = reader.last_error.startswith(f"bus {meter.bus}: cannot connect")
        fix = ("the bus itself cannot be opened: fix that first (see the serial check, or "
               "the host/port of a TCP bus)" if unopened else _WIRING_FIX)
        return Check(name, Status.FAIL, f"{meter.model} unit {meter.unit} on bus {meter.bus}: "
                     f"{reader.last_error}", fix)
    good = [r for r in readings if r.quality is Quality.GOOD]
    power = next((r.value for r in good if r.channel == "power"), None)
    shown = f", power {power:.0f} W" if power is not None else ""
    return Check(name, Status.PASS, f"{meter.model} unit {meter.unit} answered: {len(good)} "
                 f"channels{shown}")


def check_broker(config: AgentConfig, timeout_s: float = 5.0) -> Check:
    """Reach the broker (TCP, then TLS with the configured files), open an MQTT session,
    wait for CONNACK, disconnect. Blocking: run it in a thread."""
    try:
        address = parse_broker_url(config.mqtt.url)
    except UplinkError as exc:
        return Check("broker", Status.FAIL, str(exc), "fix mqtt.url")
    where = f"{address.host}:{address.port}"
    unreachable = _reach(config, address.host, address.port, address.tls, timeout_s)
    if unreachable is not None:
        return unreachable
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{config.gateway_id}-doctor",
                         protocol=MQTTProtocolVersion.MQTTv311)
    client.connect_timeout = timeout_s
    answered = threading.Event()
    result: dict[str, ReasonCode] = {}

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                   _p: object = None) -> None:
        result["rc"] = rc
        answered.set()

    client.on_connect = on_connect
    try:
        if address.tls:
            client.tls_set_context(_tls_context(config))
        if address.username is not None:
            client.username_pw_set(address.username, address.password)
        client.connect(address.host, address.port, keepalive=30)
        deadline = time.monotonic() + timeout_s
        while not answered.is_set() and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except OSError as exc:  # it answered the pre-flight a moment ago
        return Check("broker", Status.FAIL, f"connection to {where} failed: {exc}",
                     "check the gateway's network (ping the broker) and firewalls")
    finally:
        client.disconnect()
    return _connack(where, result.get("rc"), timeout_s)


def _tls_context(config: AgentConfig) -> ssl.SSLContext:
    """The uplink's TLS: verify the broker against ``ca_file`` (or the system store) and
    present the gateway's certificate when configured. Raises ``OSError``/``ssl.SSLError``."""
    mqtt_settings = config.mqtt
    context = ssl.create_default_context(cafile=_str(mqtt_settings.ca_file))
    if mqtt_settings.cert_file is not None and mqtt_settings.key_file is not None:
        context.load_cert_chain(str(mqtt_settings.cert_file), str(mqtt_settings.key_file))
    return context


def _reach(config: AgentConfig, host: str, port: int, use_tls: bool,
           timeout_s: float) -> Check | None:
    """TCP connect and, for mqtts, the TLS handshake, each failure with its own fix;
    None when both work. Sockets are always closed (paho leaks one on a failed handshake)."""
    try:
        context = _tls_context(config) if use_tls else None
    except (OSError, ssl.SSLError) as exc:
        return Check("broker", Status.FAIL, f"cannot load the TLS files: {exc}",
                     "see the tls checks: ca_file, cert_file and key_file must be readable "
                     "PEM files")
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if context is not None:
                with context.wrap_socket(sock, server_hostname=host) as tls:
                    _await_rejection(tls, min(timeout_s, 1.0))
    except (_Rejected, OSError) as exc:  # ssl errors are OSErrors too
        return _unreachable(f"{host}:{port}", host, exc)
    return None


def _unreachable(where: str, host: str, exc: Exception) -> Check:
    if isinstance(exc, _Rejected):
        return Check("broker", Status.FAIL, f"{where} rejected this gateway's certificate "
                     f"({exc})", "the broker does not trust the certificate: re-provision, or "
                     "check mqtt.cert_file is the one provisioning wrote")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return Check("broker", Status.FAIL, f"TLS with {where} failed: {exc}",
                     "check mqtt.ca_file is the broker's CA and the certificate is this "
                     "gateway's (see the tls checks)")
    if isinstance(exc, socket.gaierror):
        return Check("broker", Status.FAIL, f"cannot resolve {host}: {exc.strerror}",
                     "check mqtt.url and the gateway's DNS (cat /etc/resolv.conf)")
    if isinstance(exc, ConnectionRefusedError):
        return Check("broker", Status.FAIL, f"{where} refused the connection",
                     "check the broker runs and listens on that port, and mqtt.url")
    return Check("broker", Status.FAIL, f"cannot reach {where}: {exc}",  # timeouts, routes
                 "check the gateway's network (ping the broker) and firewalls")


class _Rejected(Exception):
    """The broker ended the TLS session right after the handshake."""


def _await_rejection(tls: ssl.SSLSocket, wait_s: float) -> None:
    """With TLS 1.3 the client's handshake completes before the broker has judged the client
    certificate; a broker that rejects it sends an alert (or closes) right after. Wait
    ``wait_s`` for that; silence means the broker is waiting for our CONNECT: accepted."""
    tls.settimeout(wait_s)
    try:
        data = tls.recv(1)
    except TimeoutError:
        return
    except ssl.SSLError as exc:
        raise _Rejected(exc.reason or str(exc)) from exc
    except OSError as exc:
        raise _Rejected(str(exc)) from exc
    if not data:
        raise _Rejected("connection closed")


def _connack(where: str, rc: ReasonCode | None, timeout_s: float) -> Check:
    if rc is None:
        return Check("broker", Status.FAIL, f"{where} accepted TCP but sent no CONNACK "
                     f"within {timeout_s:.0f}s", "check it is an MQTT port (not HTTP or TLS "
                     "on a plain URL: mqtts:// for TLS ports)")
    if rc.is_failure:
        return Check("broker", Status.FAIL, f"{where} refused the session: {rc}",
                     "check the gateway's credentials or certificate and the broker's ACL")
    return Check("broker", Status.PASS, f"MQTT session with {where} established")


def _str(path: object) -> str | None:
    return None if path is None else str(path)


async def read_meters(config: AgentConfig) -> list[Check]:
    """:func:`check_meters` over the real buses of ``config`` (closed afterwards)."""
    from edge_agent.modbus_bus import build_buses

    buses = build_buses(config.buses)
    try:
        return await check_meters(config, buses)
    finally:
        for bus in buses.values():
            await bus.close()


def run_meters(config: AgentConfig) -> list[Check]:
    return asyncio.run(read_meters(config))
