"""Fleet-provisioning decisions: request parsing, templates, claim codes."""

from __future__ import annotations

import json

import pytest

from cloud_sync.provisioning_rules import (
    CERT_COMMON_NAME,
    ProvisioningError,
    Template,
    check_template_definition,
    claim_code_digest,
    new_claim_code,
    normalise_claim_code,
    parse_csr_request,
    parse_register_request,
    rejected_payload,
)

TOPIC = "$aws/provisioning-templates/homewatt-gateway/provision/json"
GW_TEMPLATE = Template("homewatt-gateway", "gw-{SerialNumber}",
                       {"SerialNumber": "[A-Za-z0-9_-]{1,64}"}, {"region": "eu"})


@pytest.mark.parametrize(("payload", "field"), [
    (b"not json", "payload is not JSON"),
    (b"[1]", "must be a JSON object"),
    (b"{}", "certificateSigningRequest: required"),
    (b'{"certificateSigningRequest": 5}', "certificateSigningRequest: required"),
])
def test_malformed_csr_request_names_the_problem(payload: bytes, field: str) -> None:
    with pytest.raises(ProvisioningError, match=field) as raised:
        parse_csr_request(payload)
    body = json.loads(rejected_payload(raised.value))
    assert body == {"statusCode": 400, "errorCode": "InvalidPayload",
                    "errorMessage": raised.value.message}


@pytest.mark.parametrize(("topic", "payload", "field"), [
    ("$aws/provisioning-templates/bad name/provision/json", b"{}", "template name"),
    (TOPIC, b'{"parameters": {}}', "certificateOwnershipToken: required"),
    (TOPIC, b'{"certificateOwnershipToken": "t", "parameters": {"a": 1}}', "parameters.a"),
    (TOPIC, b'{"certificateOwnershipToken": "t", "parameters": []}', "parameters: must be"),
])
def test_malformed_register_request_names_the_field(topic: str, payload: bytes,
                                                    field: str) -> None:
    with pytest.raises(ProvisioningError, match=field):
        parse_register_request(topic, payload)


def test_register_request_parses_template_token_and_parameters() -> None:
    request = parse_register_request(
        TOPIC, b'{"certificateOwnershipToken": "tok", "parameters": {"SerialNumber": "A1"}}')
    assert (request.template_name, request.token, request.parameters) == (
        "homewatt-gateway", "tok", {"SerialNumber": "A1"})


def test_template_turns_parameters_into_the_thing_name() -> None:
    assert GW_TEMPLATE.render_thing_name({"SerialNumber": "0042"}, cert_common_name="x",
                                         cert_id="y") == "gw-0042"
    by_cn = Template("by-cn", "{" + CERT_COMMON_NAME + "}")
    assert by_cn.render_thing_name({}, cert_common_name="gw-cn", cert_id="y") == "gw-cn"


@pytest.mark.parametrize(("params", "problem"), [
    ({}, "parameters.SerialNumber: required"),
    ({"SerialNumber": "has space"}, "does not match"),
    ({"SerialNumber": "x" * 65}, "does not match"),
])
def test_pre_provisioning_check_refuses_bad_parameters(params: dict[str, str],
                                                       problem: str) -> None:
    with pytest.raises(ProvisioningError, match=problem) as raised:
        GW_TEMPLATE.render_thing_name(params, cert_common_name="x", cert_id="y")
    assert raised.value.error_code == "InvalidParameters"


def test_template_whose_name_comes_out_invalid_is_refused() -> None:
    loose = Template("loose", "gw/{S}", {"S": ".*"})
    with pytest.raises(ProvisioningError, match="is not 1-128"):
        loose.render_thing_name({"S": "1"}, cert_common_name="x", cert_id="y")


@pytest.mark.parametrize(("template", "problem"), [
    (Template("bad name", "gw-{S}", {"S": "."}), "template name"),
    (Template("t", "gw-{S}", {"S": "("}), "not a regular expression"),
    (Template("t", "gw-{S}-{T}", {"S": "."}), "uses T"),
])
def test_operator_template_definitions_are_checked(template: Template, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_template_definition(template)


def test_claim_codes_are_typeable_and_forgiving() -> None:
    code = new_claim_code()
    assert len(code) == 23 and code.count("-") == 3
    assert not set(code) & set("ILOU")
    sloppy = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert claim_code_digest(sloppy) == claim_code_digest(code)
    assert normalise_claim_code("ab-cd") == "ABCD"
    assert len({new_claim_code() for _ in range(1000)}) == 1000
