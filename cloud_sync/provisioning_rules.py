"""Fleet provisioning by claim, the decisions (no I/O): parsing AWS IoT's fleet-provisioning
requests, the claim code, ownership tokens, templates and their pre-provisioning checks.

The flow (AWS IoT's MQTT API, payloads as AWS documents them):

1. ``$aws/certificates/create-from-csr/json`` ``{"certificateSigningRequest": PEM}`` ->
   ``/accepted`` ``{"certificateId", "certificatePem", "certificateOwnershipToken"}``.
2. ``$aws/provisioning-templates/{name}/provision/json``
   ``{"certificateOwnershipToken", "parameters": {...}}`` -> ``/accepted``
   ``{"thingName", "deviceConfiguration": {...}}``.
   Errors go to ``/rejected`` as ``{"statusCode", "errorCode", "errorMessage"}``.

Why the claim code is in the CSR (its PKCS#9 ``challengePassword``, as SCEP and EST do): a
broker cannot tell a certificate is "pending activation". The certificate step 1 returns works
at once, so step 1 itself must be authorised. A claim certificate is shared by a fleet of
installers, and anyone who extracts it from an image could otherwise get a certificate for any
gateway name. With the code, only an installer holding a live, single-use code for a home gets
a certificate, and the name it asks for is checked against that home. Step 1 binds everything
(name, home) to the certificate. Mosquitto sends every reply to every claim client subscribed
to the reply topic, so another client may see an ownership token. All such a token can do is
finish the registration its owner asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud_sync.errors import CloudSyncError
from protocols.models import GATEWAY_ID_PATTERN

__all__ = [
    "CREATE_FROM_CSR_TOPIC", "PROVISION_FILTER", "ProvisioningError", "RegisterRequest",
    "Template", "claim_code_digest", "new_claim_code", "new_token", "parse_csr_request",
    "parse_register_request", "rejected_payload", "token_digest",
]

CREATE_FROM_CSR_TOPIC = "$aws/certificates/create-from-csr/json"
PROVISION_FILTER = "$aws/provisioning-templates/+/provision/json"
_PROVISION_TOPIC = re.compile(
    r"^\$aws/provisioning-templates/([0-9A-Za-z_-]{1,36})/provision/json$")
TEMPLATE_NAME = re.compile(r"^[0-9A-Za-z_-]{1,36}$")
_GATEWAY_ID = re.compile(GATEWAY_ID_PATTERN)
# The thing name is the certificate's CN, and X.509 bounds a CN at 64 characters (AWS thing
# names may have 128): a provisioned gateway's name is at most 64.
MAX_CN_CHARS = 64
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_:]+)\}")
# AWS IoT fills these from the certificate; a template may use them like any parameter.
CERT_COMMON_NAME = "AWS::IoT::Certificate::CommonName"
CERT_ID = "AWS::IoT::Certificate::Id"
MAX_PARAMETERS = 32
MAX_PARAMETER_CHARS = 512

# Claim codes: 20 symbols of Crockford's base32 (100 bits), shown in groups of five. Installers
# type them, so the alphabet has no I, L, O or U and reading is forgiving (see normalise).
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CLAIM_CODE_SYMBOLS = 20


class ProvisioningError(CloudSyncError):
    """A request we refuse; becomes the ``/rejected`` payload in AWS's error shape."""

    def __init__(self, status_code: int, error_code: str, message: str) -> None:
        super().__init__(f"{status_code} {error_code}: {message}")
        self.status_code = status_code
        self.error_code = error_code
        self.message = message


def rejected_payload(error: ProvisioningError) -> bytes:
    return json.dumps({"statusCode": error.status_code, "errorCode": error.error_code,
                       "errorMessage": error.message}).encode()


def bad_payload(message: str) -> ProvisioningError:
    return ProvisioningError(400, "InvalidPayload", message)


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_payload(f"payload is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_payload("payload must be a JSON object")
    return data


def parse_csr_request(payload: bytes) -> str:
    """The PEM CSR of a create-from-csr request."""
    pem = _json_object(payload).get("certificateSigningRequest")
    if not isinstance(pem, str) or not pem.strip():
        raise bad_payload("certificateSigningRequest: required, a PEM CSR string")
    return pem


@dataclass(frozen=True)
class RegisterRequest:
    template_name: str
    token: str
    parameters: dict[str, str]


def parse_register_request(topic: str, payload: bytes) -> RegisterRequest:
    match = _PROVISION_TOPIC.match(topic)
    if match is None:
        raise bad_payload(f"topic {topic!r}: template name must be 1-36 of 0-9 A-Z a-z _ -")
    data = _json_object(payload)
    token = data.get("certificateOwnershipToken")
    if not isinstance(token, str) or not token:
        raise bad_payload("certificateOwnershipToken: required, the token create-from-csr "
                          "returned")
    raw = data.get("parameters", {})
    if not isinstance(raw, dict) or len(raw) > MAX_PARAMETERS:
        raise bad_payload(f"parameters: must be an object of at most {MAX_PARAMETERS} "
                          "string values")
    params: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str) or len(value) > MAX_PARAMETER_CHARS:
            raise bad_payload(f"parameters.{key}: must be a string of at most "
                              f"{MAX_PARAMETER_CHARS} characters")
        params[str(key)] = value
    return RegisterRequest(match.group(1), token, params)


# -- secrets ---------------------------------------------------------------------------------

def new_token() -> str:
    """An ownership token: 48 random bytes, URL-safe base64. Only its digest is stored."""
    return secrets.token_urlsafe(48)


def token_digest(token: str) -> str:
    # A plain hash suffices for high-entropy secrets: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def new_claim_code() -> str:
    symbols = "".join(secrets.choice(_CROCKFORD) for _ in range(CLAIM_CODE_SYMBOLS))
    return "-".join(symbols[i:i + 5] for i in range(0, CLAIM_CODE_SYMBOLS, 5))


def normalise_claim_code(code: str) -> str:
    """Upper-case without separators; O reads as 0, I and L as 1 (Crockford)."""
    cleaned = re.sub(r"[\s-]", "", code).upper()
    return cleaned.translate(str.maketrans("OIL", "011"))


def claim_code_digest(code: str) -> str:
    return hashlib.sha256(normalise_claim_code(code).encode()).hexdigest()


def check_requested_name(common_name: str) -> str:
    """The CN a CSR asks for must be a thing name (it becomes the MQTT username)."""
    if not _GATEWAY_ID.match(common_name) or len(common_name) > MAX_CN_CHARS:
        raise ProvisioningError(400, "InvalidCertificateSigningRequest",
                                f"subject CN {common_name[:80]!r} must be the gateway's thing "
                                f"name: 1-{MAX_CN_CHARS} of A-Z a-z 0-9 : _ -")
    return common_name


# -- templates -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """A provisioning template, as data.

    ``thing_name`` is a pattern such as ``gw-{SerialNumber}``; ``parameters`` maps each
    parameter the device must send to the regular expression its value must fully match (the
    pre-provisioning check). ``device_configuration`` is returned to the device as is.
    """

    name: str
    thing_name: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    device_configuration: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True

    def render_thing_name(self, params: Mapping[str, str], *, cert_common_name: str,
                          cert_id: str) -> str:
        """The thing name for ``params``; raises ``ProvisioningError`` (400) naming the bad
        or missing parameter."""
        for name, pattern in self.parameters.items():
            value = params.get(name)
            if value is None:
                raise ProvisioningError(400, "InvalidParameters",
                                        f"parameters.{name}: required by template {self.name}")
            if not re.fullmatch(pattern, value):
                raise ProvisioningError(400, "InvalidParameters",
                                        f"parameters.{name}: {value!r} does not match {pattern}")
        values = {**params, CERT_COMMON_NAME: cert_common_name, CERT_ID: cert_id}

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise ProvisioningError(400, "InvalidParameters",
                                        f"parameters.{key}: required by template {self.name}")
            return values[key]
        thing_name = _PLACEHOLDER.sub(fill, self.thing_name)
        if not _GATEWAY_ID.match(thing_name):
            raise ProvisioningError(400, "InvalidParameters",
                                    f"thing name {thing_name!r} from template {self.name} is not "
                                    "1-128 of A-Z a-z 0-9 : _ -")
        return thing_name


def check_template_definition(template: Template) -> None:
    """Raise ``ValueError`` naming what is wrong with a template an operator defines."""
    if not TEMPLATE_NAME.match(template.name):
        raise ValueError(f"template name {template.name!r} must be 1-36 of 0-9 A-Z a-z _ -")
    for name, pattern in template.parameters.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"parameter {name}: {pattern!r} is not a regular expression: "
                             f"{exc}") from exc
    used = set(_PLACEHOLDER.findall(template.thing_name)) - {CERT_COMMON_NAME, CERT_ID}
    if missing := used - set(template.parameters):
        raise ValueError(f"thing name {template.thing_name!r} uses {', '.join(sorted(missing))}: "
                         "declare each as a parameter (NAME=REGEX)")
