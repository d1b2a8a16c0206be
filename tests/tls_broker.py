"""A private Mosquitto with TLS client-certificate auth, run from the config
``homewatt-cloud broker-config`` generates, and a CA that hands out certificates for named
identities.

    def test_x(tls_broker: TlsBroker) -> None:
        gw = tls_broker.identity("gw-A")          # key + cert with CN gw-A, files 0600
        cloud = tls_broker.identity(CLOUD_IDENTITY)
        probe = MqttProbe.connect(tls_broker, gw)  # a paho client with event-driven waits
        ...

The broker listens on 127.0.0.1 on a free port (``tls_broker.url`` is ``mqtts://...``); its
server certificate is valid for ``localhost`` and ``127.0.0.1``. Like ``tests.services.Mosquitto``
it can be killed and restarted on the same port, and persistence is on.
"""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud_sync.broker_config import (
    CLAIM_IDENTITY,
    CLOUD_IDENTITY,
    BrokerLayout,
    write_broker_config,
)
from cloud_sync.ca import CertificateAuthority, key_pem, write_private, write_public
from tests.services import free_port, missing, wait_port

__all__ = ["CLAIM_IDENTITY", "CLOUD_IDENTITY", "Identity", "MqttProbe", "TlsBroker",
           "running_tls_broker"]


@dataclass(frozen=True)
class Identity:
    """A client's TLS files; ``name`` is its certificate CN, i.e. its MQTT username."""

    name: str
    cert: Path
    key: Path
    ca: Path


class TlsBroker:
    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.workdir = workdir
        self.ca = CertificateAuthority.init(workdir / "ca")
        self.port = free_port()
        self.log_path = workdir / "broker" / "mosquitto.log"
        self.layout = BrokerLayout(
            directory=workdir / "broker", port=self.port, bind="127.0.0.1",
            log_dest=f"file {self.log_path}",
            # As root Mosquitto would drop to 'mosquitto', which cannot read the test's private
            # tmp dir (key files, persistence, log): stay root here.
            broker_user="root",
            extra=("autosave_interval 1", "log_type information"))
        self.files = write_broker_config(self.ca, self.layout,
                                         hostnames=["localhost", "127.0.0.1"])
        self._identities: dict[str, Identity] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.files.ca

    def identity(self, name: str) -> Identity:
        """Key and certificate (CN ``name``) signed by the broker's CA, made once per name."""
        if name not in self._identities:
            key, cert = self.ca.issue_client(name, days=2)
            safe = name.replace("+", "_plus_")
            base = self.workdir / "identities"
            write_private(base / f"{safe}.key", key_pem(key))
            write_public(base / f"{safe}.crt", cert.pem.encode())
            self._identities[name] = Identity(name, base / f"{safe}.crt", base / f"{safe}.key",
                                              self.files.ca)
        return self._identities[name]

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.files.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError as exc:
            self.kill()
            raise TimeoutError(f"TLS broker did not listen; its log:\n{self.log()}") from exc

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_tls_broker(workdir: Path) -> Iterator[TlsBroker]:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        missing("mosquitto binary not found (apt-get install mosquitto)")
    broker = TlsBroker(workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


class MqttProbe:
    """A paho MQTT 5 client for tests: records what it receives, waits on events (no sleeps)."""

    def __init__(self, broker: TlsBroker, identity: Identity, client_id: str | None = None,
                 ) -> None:
        self.identity = identity
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"probe-{uuid.uuid4().hex[:10]}",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(identity.ca), certfile=str(identity.cert),
                            keyfile=str(identity.key), cert_reqs=ssl.CERT_REQUIRED)
        self.received: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._connected = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: (
            None if reason.is_failure else self._connected.set())
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._host, self._port = "127.0.0.1", broker.port

    @classmethod
    def connect(cls, broker: TlsBroker, identity: Identity, client_id: str | None = None,
                timeout: float = 10.0) -> MqttProbe:
        probe = cls(broker, identity, client_id)
        probe.client.connect(probe._host, probe._port, keepalive=30)
        probe.client.loop_start()
        if not probe._connected.wait(timeout):
            probe.close()
            raise TimeoutError(f"{identity.name} did not connect to the TLS broker")
        return probe

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _client: mqtt.Client, _userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append(message)
            self._cond.notify_all()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, mid: int,
                      reasons: list[ReasonCode], _props: object) -> None:
        with self._cond:
            self._subacks[mid] = reasons
            self._cond.notify_all()

    def subscribe(self, topic_filter: str, timeout: float = 5.0) -> list[ReasonCode]:
        """Subscribe (QoS 1) and wait for the SUBACK; returns its reason codes."""
        _rc, mid = self.client.subscribe(topic_filter, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, timeout):
                raise TimeoutError(f"no SUBACK for {topic_filter}")
            return self._subacks[mid]

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> None:
        """QoS 1 publish, waiting for the PUBACK (Mosquitto acks denied publishes too)."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout)

    def topics(self) -> list[str]:
        with self._cond:
            return [m.topic for m in self.received]

    def wait_for(self, topic: str, timeout: float = 5.0) -> mqtt.MQTTMessage:
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((m for m in self.received if m.topic == topic), None), timeout)
            if found is None:
                raise TimeoutError(f"nothing arrived on {topic}; got {self.topics()}")
            return found

