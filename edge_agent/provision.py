"""``homewatt-agent provision``'s core: bring a new gateway online by fleet provisioning by claim.

:func:`provision` generates the gateway's private key here (it is written 0600 and never sent),
builds a CSR for the thing name carrying the installer's one-time claim code (its
``challengePassword``), and sends it with a claim certificate over AWS IoT's fleet-provisioning
MQTT API (``CreateCertificateFromCsr``, then ``RegisterThing`` with the template's parameters).
It then writes the certificate and a complete agent config (``gateway_id`` = the thing name,
TLS paths) and, unless told not to, checks that the gateway connects with its new identity.
``homewatt-agent setup`` (packaging) calls the same function.

Crosstalk: a plain MQTT broker sends every reply to every claim client subscribed to the reply
topic. If two gateways provision at the same moment, one may see the other's answer. AWS IoT
Core routes each reply to its requester, so this happens only on a self-hosted broker.
A certificate whose key is not ours, or a thing name that is not our certificate's, is such a
reply: each step is then retried (a rejection too, once). On a retry, "token already used" means
our own registration went through, because the cloud binds the thing to the certificate when it
issues it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, NameOID
from pydantic import ValidationError

from edge_agent.config import AgentConfig
from edge_agent.errors import EdgeAgentError
from edge_agent.ports import CertificateGrant, IdentityChannel, Registration

__all__ = ["ProvisionError", "ProvisionInputError", "ProvisionRequest", "ProvisionResult",
           "ProvisioningRejected", "provision"]

log = logging.getLogger(__name__)

THING_NAME = r"^[A-Za-z0-9:_-]{1,64}$"  # a certificate CN holds at most 64 characters
DEFAULT_TEMPLATE = "homewatt-gateway"
ATTEMPTS = 3
KEY_FILE, CERT_FILE, CA_FILE = "gateway.key", "gateway.crt", "ca.crt"


class ProvisionError(EdgeAgentError):
    """Provisioning did not complete; the message says why and what to do (exit 1)."""


class ProvisionInputError(ProvisionError):
    """The request itself is wrong (exit 2): a flag, a file, an existing identity."""


class ProvisioningRejected(ProvisionError):
    """The cloud answered ``/rejected`` (AWS's error shape)."""

    def __init__(self, status_code: int, error_code: str, message: str) -> None:
        super().__init__(f"the cloud refused: {message} ({status_code} {error_code})")
        self.status_code = status_code
        self.error_code = error_code
        self.reason = message


@dataclass(frozen=True)
class ProvisionRequest:
    broker_url: str  # mqtts://host:8883
    claim_cert: Path
    claim_key: Path
    claim_code: str
    serial: str
    ca_file: Path | None = None  # None: the system's trust store
    thing_name: str | None = None  # default gw-<serial>, as the default template names it
    template: str = DEFAULT_TEMPLATE
    parameters: Mapping[str, str] = field(default_factory=dict)
    out_dir: Path = Path("/etc/homewatt")
    config_path: Path | None = None  # default <out_dir>/agent.toml
    data_dir: Path = Path("/var/lib/homewatt")  # for a new config only
    transport: Literal["paho", "awsiot"] = "paho"
    force: bool = False
    timeout_s: float = 30.0

    @property
    def name(self) -> str:
        return self.thing_name or f"gw-{self.serial}"

    @property
    def config_file(self) -> Path:
        return self.config_path or self.out_dir / "agent.toml"


@dataclass(frozen=True)
class ProvisionResult:
    thing_name: str
    certificate_id: str
    key_file: Path
    cert_file: Path
    ca_file: Path | None
    config_file: Path
    device_configuration: Mapping[str, str]


ChannelFactory = Callable[[ProvisionRequest], IdentityChannel]
Progress = Callable[[str], None]


def provision(request: ProvisionRequest, open_channel: ChannelFactory, *,
              progress: Progress = lambda _line: None,
              verify: Callable[[ProvisionResult], None] | None = None) -> ProvisionResult:
    """Provision this gateway (see the module docstring).

    ``open_channel`` connects with the claim certificate (``AwsIotIdentityChannel.open`` for
    real). ``verify``, if given, connects with the new identity. Raises
    ``ProvisionInputError`` before anything is sent, ``ProvisioningRejected`` or
    ``ProvisionError`` after; on any failure the existing identity and config are untouched.
    """
    _check(request)
    # the config must be writable as asked before the claim code is spent
    _config_document(request, request.name, request.out_dir, _ca_target(request))
    key = ec.generate_private_key(ec.SECP256R1())
    pending_key = request.out_dir / f".{KEY_FILE}.pending"
    write_private(pending_key, _key_pem(key))
    progress(f"private key generated on this gateway ({pending_key.parent}, mode 0600; it is "
             "never sent)")
    try:
        grant, registration = _exchange(request, open_channel, key, progress)
        result = _install(request, pending_key, grant, registration)
    finally:
        pending_key.unlink(missing_ok=True)  # gone already if installed
    progress(f"wrote {result.cert_file}, {result.key_file} and {result.config_file}")
    if verify is not None:
        verify(result)
        progress(f"connected as {result.thing_name} with the new certificate")
    return result


def _exchange(request: ProvisionRequest, open_channel: ChannelFactory,
              key: ec.EllipticCurvePrivateKey,
              progress: Progress) -> tuple[CertificateGrant, Registration]:
    csr = _csr(key, request.name, request.claim_code)
    channel = open_channel(request)
    progress(f"connected to {request.broker_url} with the claim certificate")
    try:
        grant = _certificate(channel, csr, key)
        progress(f"certificate {grant.certificate_id[:16]}... issued for {request.name}")
        registration = _register(channel, request, grant)
    finally:
        channel.close()
    progress(f"registered as thing {registration.thing_name} (template {request.template})")
    return grant, registration


def _check(request: ProvisionRequest) -> None:
    if not re.match(THING_NAME, request.name):
        raise ProvisionInputError(f"thing name {request.name!r} (from --serial / --thing-name) "
                                  "must be 1-64 of A-Z a-z 0-9 : _ -")
    if not request.broker_url.startswith("mqtts://"):
        raise ProvisionInputError(f"--broker {request.broker_url!r}: provisioning needs TLS, "
                                  "use mqtts://host:8883")
    if not request.claim_code.strip():
        raise ProvisionInputError("--claim-code is empty: ask for a claim code for the home")
    files = [("--claim-cert", request.claim_cert), ("--claim-key", request.claim_key)]
    if request.ca_file is not None:
        files.append(("--ca-file", request.ca_file))
    for flag, path in files:
        if not os.access(path, os.R_OK):
            raise ProvisionInputError(f"{flag} {path}: not a readable file")
    existing = request.out_dir / CERT_FILE
    if existing.exists() and not request.force:
        raise ProvisionInputError(f"{existing} exists: this gateway is already provisioned. "
                                  "--force provisions again (new key, certificate and thing)")


def _csr(key: ec.EllipticCurvePrivateKey, name: str, claim_code: str) -> str:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_attribute(AttributeOID.CHALLENGE_PASSWORD, claim_code.strip().encode())
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _certificate(channel: IdentityChannel, csr: str,
                 key: ec.EllipticCurvePrivateKey) -> CertificateGrant:
    rejected: ProvisioningRejected | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            grant = channel.create_certificate_from_csr(csr)
        except ProvisioningRejected as exc:
            if rejected is not None:  # the same refusal twice: it is ours
                raise
            rejected = exc
            _pause(attempt)
            continue
        try:
            cert = x509.load_pem_x509_certificate(grant.certificate_pem.encode())
        except ValueError as exc:
            raise ProvisionError("the cloud returned a certificate that is not PEM") from exc
        if cert.public_key() == key.public_key():
            return grant
        log.warning("a certificate for another key arrived (another gateway provisioning at "
                    "the same time?); asking again")
        _pause(attempt)
    raise rejected or ProvisionError("only other gateways' certificates arrived; try again")


def _register(channel: IdentityChannel, request: ProvisionRequest,
              grant: CertificateGrant) -> Registration:
    params = {"SerialNumber": request.serial, **request.parameters}
    cn = x509.load_pem_x509_certificate(grant.certificate_pem.encode()).subject \
        .get_attributes_for_oid(NameOID.COMMON_NAME)
    ours = cn[0].value if cn else None  # our cloud binds the thing name to the CN
    retried = False
    for attempt in range(1, ATTEMPTS + 1):
        try:
            registration = channel.register_thing(request.template, grant.ownership_token,
                                                  params)
        except ProvisioningRejected as exc:
            if retried and exc.error_code == "InvalidCertificateOwnershipToken" \
                    and "already used" in exc.reason:
                # only our token's holder could use it, and the cloud registers it as we asked
                return Registration(str(ours or request.name), {})
            if retried:
                raise
            retried = True
            _pause(attempt)
            continue
        if ours is None or ours != request.name or registration.thing_name == ours:
            return registration
        log.warning("registration of %s arrived (another gateway provisioning at the same "
                    "time?); asking again", registration.thing_name)
        retried = True
        _pause(attempt)
    raise ProvisionError("only other gateways' registrations arrived; try again")


def _pause(attempt: int) -> None:
    time.sleep(0.2 * attempt + secrets.randbelow(200) / 1000)


def _install(request: ProvisionRequest, pending_key: Path, grant: CertificateGrant,
             registration: Registration) -> ProvisionResult:
    out = request.out_dir
    ca_file = _ca_target(request)
    if request.ca_file is not None and ca_file is not None \
            and request.ca_file.resolve() != ca_file.resolve():
        write_file(ca_file, request.ca_file.read_bytes(), 0o644)
    config = _config_document(request, registration.thing_name, out, ca_file)
    write_file(out / f".{CERT_FILE}.pending", grant.certificate_pem.encode(), 0o644)
    # key before certificate: a crash in between leaves a key with no certificate (re-run),
    # never a certificate the key does not match being used
    os.replace(pending_key, out / KEY_FILE)
    os.replace(out / f".{CERT_FILE}.pending", out / CERT_FILE)
    if request.config_file.exists():
        write_file(request.config_file.with_name(request.config_file.name + ".bak"),
                   request.config_file.read_bytes(), 0o644)
    write_file(request.config_file, tomli_w.dumps(config).encode(), 0o644)
    _fsync_dir(out)
    return ProvisionResult(registration.thing_name, grant.certificate_id, out / KEY_FILE,
                           out / CERT_FILE, ca_file, request.config_file,
                           registration.device_configuration)


def _ca_target(request: ProvisionRequest) -> Path | None:
    return request.out_dir / CA_FILE if request.ca_file is not None else None


def _config_document(request: ProvisionRequest, thing_name: str, out: Path,
                     ca_file: Path | None) -> dict[str, Any]:
    """The existing config (meters, buses: what `scan` wrote) with the identity set, or a new
    one; validated before anything is written."""
    data: dict[str, Any] = {}
    if request.config_file.exists():
        try:
            data = tomllib.loads(request.config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProvisionInputError(f"--config {request.config_file}: cannot read it as "
                                      f"TOML ({exc}); fix or remove it") from exc
    data["gateway_id"] = thing_name
    data.setdefault("data_dir", str(request.data_dir))
    mqtt = dict(data.get("mqtt", {}))
    mqtt.update(url=request.broker_url, transport=request.transport,
                cert_file=str(out / CERT_FILE), key_file=str(out / KEY_FILE))
    if ca_file is not None:
        mqtt["ca_file"] = str(ca_file)
    else:
        mqtt.pop("ca_file", None)
    data["mqtt"] = mqtt
    try:
        AgentConfig(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ProvisionInputError(f"--config {request.config_file}: {key}: {first['msg']} "
                                  "(fix the existing config first)") from exc
    return data


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes) -> None:
    """Mode 0600 from creation on (never readable by others, not even briefly), fsynced."""
    write_file(path, data, 0o600)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` (temp file, fsync, rename) created with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
