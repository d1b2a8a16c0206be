"""Bundle verification: every way a bundle can be bad is refused before install, by reason."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest

from firmware_update import keys
from firmware_update.envelope import MANIFEST_TYPE, Envelope
from firmware_update.errors import BadInput, BundleRejected, RejectReason
from firmware_update.policy import DeviceFacts, check_payload, verify_manifest
from firmware_update.semver import parse_version
from firmware_update.trust import TrustRoot, load_initial_root, rotate_root
from tests.fw_helpers import NOW, make_signer, signed_bundle


def facts(**over: object) -> DeviceFacts:
    base: dict[str, object] = {"product": "homewatt-agent", "kind": "app", "hardware": "rpi4",
                               "now": NOW, "installed": parse_version("1.0.0"),
                               "minimum": parse_version("1.0.0")}
    base.update(over)
    return DeviceFacts(**base)  # type: ignore[arg-type]


def reason_of(raw: bytes, root: TrustRoot, device: DeviceFacts | None = None) -> RejectReason:
    with pytest.raises(BundleRejected) as info:
        verify_manifest(raw, root, device or facts())
    assert str(info.value)  # a readable message, never empty
    return info.value.reason


def test_a_good_bundle_verifies(tmp_path: Path) -> None:
    ks, root = make_signer()
    built = signed_bundle(tmp_path, ks)
    manifest = verify_manifest(built.manifest_path.read_bytes(), root, facts())
    assert manifest.version == "1.1.0"
    check_payload(manifest, built.payload_path.stat().st_size, manifest.payload.sha256)


def test_tampered_manifest_is_a_bad_signature(tmp_path: Path) -> None:
    ks, root = make_signer()
    data = json.loads(signed_bundle(tmp_path, ks).manifest_path.read_bytes())
    manifest = json.loads(base64.b64decode(data["payload"]))
    manifest["compatible_hardware"].append("rpi3")  # widen it after signing
    data["payload"] = base64.b64encode(json.dumps(manifest).encode()).decode()
    assert reason_of(json.dumps(data).encode(), root) is RejectReason.BAD_SIGNATURE


def test_garbage_payload_bytes_are_never_parsed_before_the_signature(tmp_path: Path) -> None:
    ks, root = make_signer()
    data = json.loads(signed_bundle(tmp_path, ks).manifest_path.read_bytes())
    data["payload"] = base64.b64encode(b"{not json").decode()
    # a signature failure, not a JSON error: the bytes were never read as a manifest
    assert reason_of(json.dumps(data).encode(), root) is RejectReason.BAD_SIGNATURE


def test_wrong_key_is_untrusted(tmp_path: Path) -> None:
    _, root = make_signer()
    intruder = [keys.generate()]
    assert reason_of(signed_bundle(tmp_path, intruder).manifest_path.read_bytes(), root) \
        is RejectReason.UNTRUSTED_KEY


def test_unsigned_is_untrusted(tmp_path: Path) -> None:
    _, root = make_signer()
    assert reason_of(signed_bundle(tmp_path, []).manifest_path.read_bytes(), root) \
        is RejectReason.UNTRUSTED_KEY


def test_threshold_needs_distinct_keys(tmp_path: Path) -> None:
    ks, root = make_signer(threshold=2)
    one = signed_bundle(tmp_path / "a", ks[:1]).manifest_path.read_bytes()
    assert reason_of(one, root) is RejectReason.THRESHOLD
    # the same signature twice does not count twice
    env = json.loads(one)
    env["signatures"].append(env["signatures"][0])
    assert reason_of(json.dumps(env).encode(), root) is RejectReason.THRESHOLD
    both = signed_bundle(tmp_path / "b", ks).manifest_path.read_bytes()
    assert verify_manifest(both, root, facts()).version == "1.1.0"


def test_expired_manifest(tmp_path: Path) -> None:
    ks, root = make_signer()
    built = signed_bundle(tmp_path, ks, created=NOW - timedelta(days=40),
                          expires_in=timedelta(days=30))
    assert reason_of(built.manifest_path.read_bytes(), root) is RejectReason.EXPIRED


def test_incompatible_hardware(tmp_path: Path) -> None:
    ks, root = make_signer()
    built = signed_bundle(tmp_path, ks, hardware=("rpi3",))
    assert reason_of(built.manifest_path.read_bytes(), root) is RejectReason.INCOMPATIBLE_HARDWARE


@pytest.mark.parametrize("version", ["1.0.0", "0.9.9", "1.0.0-rc.1"])
def test_downgrade_or_reinstall_is_refused(tmp_path: Path, version: str) -> None:
    ks, root = make_signer()
    built = signed_bundle(tmp_path, ks, version)
    assert reason_of(built.manifest_path.read_bytes(), root) is RejectReason.DOWNGRADE


def test_signed_downgrade_override(tmp_path: Path) -> None:
    ks, root = make_signer()
    built = signed_bundle(tmp_path, ks, "0.9.0", allow_downgrade=True)
    assert verify_manifest(built.manifest_path.read_bytes(), root, facts()).version == "0.9.0"


def test_upgrade_path_min_version(tmp_path: Path) -> None:
    ks, root = make_signer()
    built = signed_bundle(tmp_path, ks, "2.0.0", min_version="1.5.0")
    assert reason_of(built.manifest_path.read_bytes(), root) is RejectReason.UPGRADE_PATH
    ok = facts(installed=parse_version("1.5.0"), minimum=parse_version("1.5.0"))
    assert verify_manifest(built.manifest_path.read_bytes(), root, ok).version == "2.0.0"


def test_blocklisted_version_is_refused_ignoring_build_metadata(tmp_path: Path) -> None:
    ks, root = make_signer()
    built = signed_bundle(tmp_path, ks, "1.1.0+build.7")
    assert reason_of(built.manifest_path.read_bytes(), root,
                     facts(blocklist=frozenset({"1.1.0"}))) is RejectReason.BLOCKLISTED


def test_wrong_product_or_kind(tmp_path: Path) -> None:
    ks, root = make_signer()
    raw = signed_bundle(tmp_path, ks).manifest_path.read_bytes()
    assert reason_of(raw, root, facts(kind="rauc")) is RejectReason.WRONG_PRODUCT
    assert reason_of(raw, root, facts(product="homewatt-os")) is RejectReason.WRONG_PRODUCT


def test_payload_length_and_hash(tmp_path: Path) -> None:
    ks, root = make_signer()
    manifest = verify_manifest(signed_bundle(tmp_path, ks).manifest_path.read_bytes(), root,
                               facts())
    with pytest.raises(BundleRejected) as info:
        check_payload(manifest, manifest.payload.size + 1, manifest.payload.sha256)
    assert info.value.reason is RejectReason.PAYLOAD_LENGTH
    with pytest.raises(BundleRejected) as info:
        check_payload(manifest, manifest.payload.size, "0" * 64)
    assert info.value.reason is RejectReason.PAYLOAD_HASH


@pytest.mark.parametrize("raw", [b"", b"[]", b"{}", b'{"payloadType": 1}',
                                 b'{"payloadType": "x", "payload": "@@", "signatures": []}',
                                 b"x" * 70000])
def test_malformed_envelopes(raw: bytes) -> None:
    _, root = make_signer()
    assert reason_of(raw, root) is RejectReason.MALFORMED


def test_signed_but_invalid_manifest_names_the_field() -> None:
    ks, root = make_signer()
    env = Envelope(MANIFEST_TYPE, json.dumps({"name": "homewatt-agent"}).encode())
    env.sign(ks[0])
    with pytest.raises(BundleRejected) as info:
        verify_manifest(env.to_bytes(), root, facts())
    assert info.value.reason is RejectReason.MALFORMED
    assert "manifest field" in str(info.value)


def test_root_rotation_needs_old_and_new_thresholds() -> None:
    old_keys, old_root = make_signer()
    env = old_root.envelope()
    env.sign(old_keys[0])
    assert load_initial_root(env) == old_root
    new_keys = [keys.generate(), keys.generate()]
    successor = TrustRoot.of([k.public for k in new_keys], threshold=2, version=2)
    only_new = successor.envelope()
    for k in new_keys:
        only_new.sign(k)
    with pytest.raises(BundleRejected):
        rotate_root(old_root, only_new, NOW)  # the old root never approved it
    only_old = successor.envelope()
    only_old.sign(old_keys[0])
    with pytest.raises(BundleRejected):
        rotate_root(old_root, only_old, NOW)  # a stolen old key alone is not enough
    full = successor.envelope()
    for k in [*old_keys, *new_keys]:
        full.sign(k)
    assert rotate_root(old_root, full, NOW) == successor
    with pytest.raises(BundleRejected) as info:
        rotate_root(successor, full, NOW)  # replaying the same version
    assert info.value.reason is RejectReason.DOWNGRADE


def test_semver_precedence() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
               "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0"]
    parsed = [parse_version(v) for v in ordered]
    assert parsed == sorted(parsed)
    assert parse_version("1.0.0+a") == parse_version("1.0.0+b")
    assert str(parse_version("2.1.3-rc.1+x")) == "2.1.3-rc.1+x"
    for bad in ["1.0", "01.0.0", "1.0.0-", "v1.0.0", ""]:
        with pytest.raises(BadInput, match="semantic version"):
            parse_version(bad)
