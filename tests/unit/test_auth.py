"""Auth decisions and credentials, pure: roles, passwords, API keys, JWTs, the rate limiter."""

from __future__ import annotations

import jwt
import pytest

from cloud_sync.auth.credentials import (
    InvalidCredentials,
    api_key_matches,
    hash_password,
    issue_token,
    new_api_key,
    split_api_key,
    verify_password,
    verify_token,
)
from cloud_sync.auth.principal import Principal, Role
from cloud_sync.auth.rate_limit import SlidingWindowLimiter
from cloud_sync.errors import BadInput
from cloud_sync.registry_rules import check_device, check_email, check_timezone, device_id_for

SECRET = "s" * 16 + "0123456789abcdef" * 2
NOW = 1_790_000_000


def test_roles_grant_what_their_holders_need_and_no_more() -> None:
    p = Principal("user:u", "u", homes={"a": Role.OWNER, "b": Role.MEMBER, "c": Role.INSTALLER})
    assert [p.may("a", x) for x in ("read", "control", "install", "manage")] == [True] * 4
    assert [p.may("b", x) for x in ("read", "control", "install", "manage")] == \
        [True, True, False, False]
    assert [p.may("c", x) for x in ("read", "control", "install", "manage")] == \
        [True, True, True, False]
    assert not p.may("other", "read")
    assert not p.may(None, "read")  # an unassigned gateway: operators only
    operator = Principal("key:k", None, operator=True)
    assert operator.may("anything", "manage") and operator.may(None, "read")


def test_a_credential_can_pass_on_at_most_what_its_holder_has() -> None:
    member = Principal("user:u", "u", homes={"a": Role.MEMBER})
    assert member.can_grant("a", Role.MEMBER)
    assert not member.can_grant("a", Role.OWNER)
    assert not member.can_grant("b", Role.MEMBER)
    installer = Principal("user:i", "i", homes={"a": Role.INSTALLER})
    assert installer.can_grant("a", Role.MEMBER) and not installer.can_grant("a", Role.OWNER)


def test_passwords_verify_only_with_the_right_password_and_salts_differ() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and stored != hash_password("correct horse battery")
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterz", stored)
    assert not verify_password("anything", None)
    assert not verify_password("anything", "md5$garbage")
    assert not verify_password("anything", "scrypt$x$y$z$a$b")


def test_api_keys_are_shown_once_stored_as_a_hash_and_parsed_strictly() -> None:
    key = new_api_key()
    assert key.secret_sha256 not in key.plaintext
    parts = split_api_key(key.plaintext)
    assert parts is not None and parts[0] == key.key_id
    assert api_key_matches(parts[1], key.secret_sha256)
    assert not api_key_matches(parts[1][:-1] + "x", key.secret_sha256)
    for bad in ("", "hw_", "hw_short_secret", key.plaintext + "x", "Bearer " + key.plaintext):
        assert split_api_key(bad) is None


def test_a_valid_token_names_its_user() -> None:
    token = issue_token("user-1", SECRET, now_s=NOW, ttl_s=3600)
    assert verify_token(token, SECRET, now_s=NOW + 3599) == "user-1"


@pytest.mark.parametrize("make, words", [
    (lambda: issue_token("user-1", SECRET, now_s=NOW - 7200, ttl_s=3600), "expired"),
    (lambda: issue_token("user-1", "another-secret-" * 4, now_s=NOW, ttl_s=3600), "Signature"),
    (lambda: jwt.encode({"sub": "user-1", "iat": NOW, "exp": NOW + 60, "iss": "homewatt",
                         "aud": "someone-else"}, SECRET, algorithm="HS256"), "Audience"),
    (lambda: jwt.encode({"sub": "user-1", "iat": NOW, "exp": NOW + 60, "iss": "homewatt",
                         "aud": "homewatt-api"}, "", algorithm="none"), "alg value"),
    (lambda: "not.a.jwt", "invalid access token"),
])
def test_expired_forged_or_foreign_tokens_are_refused(make: object, words: str) -> None:
    with pytest.raises(InvalidCredentials, match=words):
        verify_token(make(), SECRET, now_s=NOW)  # type: ignore[operator]


def test_the_limiter_allows_the_limit_per_window_and_says_when_to_retry() -> None:
    clock = {"now": 100.0}
    limiter = SlidingWindowLimiter(3, 60.0, lambda: clock["now"])
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
    clock["now"] = 130.0
    assert limiter.hit("a") == pytest.approx(30.0)  # the first hit leaves the window at 160
    assert limiter.hit("b") is None  # per caller
    clock["now"] = 160.5
    assert limiter.hit("a") is None


def test_the_limiter_forgets_idle_callers_when_its_table_is_full() -> None:
    clock = {"now": 0.0}
    limiter = SlidingWindowLimiter(1, 10.0, lambda: clock["now"], max_keys=2)
    limiter.hit("a")
    limiter.hit("b")
    clock["now"] = 11.0
    assert limiter.tracked == 2
    limiter.hit("c")
    assert limiter.tracked == 1


def test_registry_inputs_are_checked_with_the_fix_in_the_message() -> None:
    assert check_email("  Ann@Example.COM ") == "ann@example.com"
    with pytest.raises(BadInput, match="email"):
        check_email("ann-at-example")
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"
    with pytest.raises(BadInput, match="IANA"):
        check_timezone("Mars/Olympus")
    check_device("meter", "grid", [])
    check_device("actuator", None, ["switch_on"])
    for kind, role, caps, words in (("meter", None, [], "needs a role"),
                                    ("meter", "pv", ["switch_on"], "take no commands"),
                                    ("actuator", "grid", ["switch_on"], "only meters"),
                                    ("actuator", None, ["fly"], "fly not an action"),
                                    ("actuator", None, [], "none given"),
                                    ("robot", None, [], "not a device kind")):
        with pytest.raises(BadInput, match=words):
            check_device(kind, role, caps)
    assert device_id_for("gw-1", "relay.2") == "gw-1.relay.2"
