"""The generated ACL and Mosquitto config (their effect is tested through a real Mosquitto in
tests/integration/test_broker_acl.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_sync.broker_config import (
    BrokerConfigError,
    BrokerLayout,
    render_acl,
    render_mosquitto_conf,
)


def test_gateways_get_their_own_topics_by_pattern() -> None:
    lines = render_acl().splitlines()
    assert "pattern readwrite hw/%u/#" in lines
    assert "pattern readwrite $aws/things/%u/#" in lines
    # nothing but the two patterns: a pattern applies to every gateway
    assert [line for line in lines if line.startswith("pattern")] == [
        "pattern readwrite hw/%u/#", "pattern readwrite $aws/things/%u/#"]


@pytest.mark.parametrize("name", ["homewatt/claim", "claim", "gw-1", "a+b c", "+x#"])
def test_service_identities_must_be_out_of_pattern_reach(name: str) -> None:
    with pytest.raises(BrokerConfigError, match=r"must contain a '\+'"):
        render_acl(claim_identity=name)


def test_cloud_and_claim_identities_must_differ() -> None:
    with pytest.raises(BrokerConfigError, match="must differ"):
        render_acl(cloud_identity="x+y", claim_identity="x+y")


def test_config_requires_client_certificates(tmp_path: Path) -> None:
    conf = render_mosquitto_conf(BrokerLayout(directory=tmp_path, port=8884))
    lines = conf.splitlines()
    for needed in ("allow_anonymous false", "require_certificate true",
                   "use_identity_as_username true", f"acl_file {tmp_path}/acl",
                   "listener 8884 0.0.0.0", "user mosquitto"):
        assert needed in lines
    assert "password_file" not in conf
