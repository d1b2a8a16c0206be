"""``provision()``'s decisions with a fake identity channel: what it writes, what it never sends,
crosstalk from other gateways' replies, refusals that leave everything as it was."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID

from cloud_sync.ca import CertificateAuthority
from edge_agent.config import load_config
from edge_agent.provision import (
    ProvisionError,
    ProvisioningRejected,
    ProvisionInputError,
    ProvisionRequest,
    provision,
)
from edge_agent.provision_channel import FakeIdentityChannel

CODE = "ABCDE-FGHJK-MNPQR-STVWX"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca")


@pytest.fixture
def request_(tmp_path: Path, ca: CertificateAuthority) -> ProvisionRequest:
    for name in ("claim.crt", "claim.key"):
        (tmp_path / name).write_text("x")
    return ProvisionRequest(broker_url="mqtts://broker:8883", claim_cert=tmp_path / "claim.crt",
                            claim_key=tmp_path / "claim.key", claim_code=CODE, serial="0042",
                            ca_file=ca.cert_path, out_dir=tmp_path / "etc",
                            data_dir=tmp_path / "var")


class Cloud:
    """A fake cloud that signs CSRs with the real CA; ``script`` can replace answers."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.script: dict[str, list[dict[str, Any]]] = {"create": [], "register": []}
        self.channel = FakeIdentityChannel(self.answer)

    def answer(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        if self.script[operation]:
            return self.script[operation].pop(0)
        if operation == "create":
            csr = x509.load_pem_x509_csr(request["csr"].encode())
            issued = self.ca.sign_csr(csr, common_name="gw-0042", days=10)
            return {"certificateId": issued.certificate_id, "certificatePem": issued.pem,
                    "certificateOwnershipToken": "token-1"}
        return {"thingName": "gw-0042", "deviceConfiguration": {"tier": "gold"}}

    def opener(self) -> Callable[[ProvisionRequest], FakeIdentityChannel]:
        return lambda _request: self.channel


def foreign_certificate(ca: CertificateAuthority) -> dict[str, Any]:
    _key, issued = ca.issue_client("gw-other", days=1)
    return {"certificateId": issued.certificate_id, "certificatePem": issued.pem,
            "certificateOwnershipToken": "their-token"}


def test_provisioning_writes_identity_and_config_and_never_sends_the_key(
        request_: ProvisionRequest, ca: CertificateAuthority) -> None:
    cloud = Cloud(ca)
    lines: list[str] = []
    result = provision(request_, cloud.opener(), progress=lines.append)
    assert result.thing_name == "gw-0042" and result.device_configuration == {"tier": "gold"}
    assert stat.S_IMODE(result.key_file.stat().st_mode) == 0o600
    key_pem = result.key_file.read_bytes()
    sent = repr(cloud.channel.calls)
    assert b"PRIVATE KEY" in key_pem and "PRIVATE KEY" not in sent
    (_, create), (_, register) = cloud.channel.calls
    csr = x509.load_pem_x509_csr(create["csr"].encode())
    assert csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value \
        == CODE.encode()
    assert register == {"template": "homewatt-gateway", "token": "token-1",
                        "parameters": {"SerialNumber": "0042"}}
    config = load_config(result.config_file)
    assert config.gateway_id == "gw-0042"
    assert (config.mqtt.cert_file, config.mqtt.key_file, config.mqtt.ca_file) == (
        result.cert_file, result.key_file, result.ca_file)
    assert cloud.channel.closed and len(lines) == 5
    assert not list(request_.out_dir.glob(".*"))  # no pending or temp files left


def test_existing_config_keeps_its_meters(request_: ProvisionRequest,
                                          ca: CertificateAuthority) -> None:
    request_.out_dir.mkdir()
    original = ('gateway_id = "placeholder"\n[[buses]]\nname = "rs485"\nkind = "rtu"\n'
                'serial_port = "/dev/ttyUSB0"\n[[meters]]\nid = "grid"\nmodel = "sdm630"\n'
                'bus = "rs485"\n')
    request_.config_file.write_text(original)
    provision(request_, Cloud(ca).opener())
    data = tomllib.loads(request_.config_file.read_text())
    assert data["gateway_id"] == "gw-0042" and data["meters"][0]["id"] == "grid"
    assert request_.config_file.with_suffix(".toml.bak").read_text() == original


def test_another_gateways_replies_are_retried_past(request_: ProvisionRequest,
                                                  ca: CertificateAuthority,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge_agent.provision._pause", lambda _attempt: None)
    cloud = Cloud(ca)
    cloud.script["create"].append(foreign_certificate(ca))
    # someone else's registration arrives; on the retry our token is already used: it was ours
    cloud.script["register"] += [
        {"thingName": "gw-other"},
        {"statusCode": 403, "errorCode": "InvalidCertificateOwnershipToken",
         "errorMessage": "certificateOwnershipToken was already used: a token provisions once"}]
    result = provision(request_, cloud.opener())
    assert result.thing_name == "gw-0042"
    assert [op for op, _ in cloud.channel.calls] == ["create", "create", "register", "register"]


def test_a_refusal_is_reported_and_leaves_nothing_behind(request_: ProvisionRequest,
                                                         ca: CertificateAuthority,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge_agent.provision._pause", lambda _attempt: None)
    cloud = Cloud(ca)
    refusal = {"statusCode": 403, "errorCode": "InvalidClaimCode",
               "errorMessage": "the claim code has expired: ask for a new one"}
    cloud.script["create"] += [refusal, refusal]
    with pytest.raises(ProvisioningRejected, match="has expired: ask for a new one"):
        provision(request_, cloud.opener())
    assert list(request_.out_dir.iterdir()) == []  # no key, no certificate, no config


def test_already_provisioned_gateway_needs_force(request_: ProvisionRequest,
                                                 ca: CertificateAuthority) -> None:
    request_.out_dir.mkdir()
    (request_.out_dir / "gateway.crt").write_text("old")
    cloud = Cloud(ca)
    with pytest.raises(ProvisionInputError, match=r"already provisioned.*--force"):
        provision(request_, cloud.opener())
    assert cloud.channel.calls == []


@pytest.mark.parametrize(("change", "problem"), [
    ({"serial": "has space"}, "thing name 'gw-has space'"),
    ({"thing_name": "x" * 65}, "must be 1-64"),
    ({"broker_url": "mqtt://broker:1883"}, "needs TLS"),
    ({"claim_code": " "}, "--claim-code is empty"),
    ({"claim_key": Path("/nonexistent/claim.key")}, "--claim-key /nonexistent/claim.key"),
])
def test_bad_input_is_refused_before_anything_is_sent(request_: ProvisionRequest,
                                                      ca: CertificateAuthority,
                                                      change: dict[str, Any],
                                                      problem: str) -> None:
    cloud = Cloud(ca)
    bad = ProvisionRequest(**{**request_.__dict__, **change})
    with pytest.raises(ProvisionInputError, match=problem.replace("(", r"\(")):
        provision(bad, cloud.opener())
    assert cloud.channel.calls == []


def test_an_invalid_existing_config_is_named(request_: ProvisionRequest,
                                             ca: CertificateAuthority) -> None:
    request_.out_dir.mkdir()
    request_.config_file.write_text('gateway_id = "x"\nbogus_key = 1\n')
    cloud = Cloud(ca)
    with pytest.raises(ProvisionError, match="bogus_key"):
        provision(request_, cloud.opener())
    assert cloud.channel.calls == []  # the claim code was not spent


def test_ec_key_is_p256(request_: ProvisionRequest, ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives import serialization

    result = provision(request_, Cloud(ca).opener())
    key = serialization.load_pem_private_key(result.key_file.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
