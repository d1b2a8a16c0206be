"""Secrets at rest and on the wire: password hashes, API keys, JWT access tokens.

- Passwords: scrypt (stdlib ``hashlib.scrypt``, memory-hard) with a random salt, stored as
  ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` so the cost can be raised later without a migration.
- API keys: ``hw_<id>_<secret>``: the id finds the row, only the SHA-256 of the 256-bit random
  secret is stored, and comparison is constant-time.
- Access tokens: HS256 JWTs (PyJWT) with ``sub``, ``iat``, ``exp``, ``iss`` and ``aud``; every
  failure (bad signature, expired, wrong audience, malformed) is one :class:`InvalidCredentials`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import jwt

from cloud_sync.errors import CloudSyncError

ISSUER = "homewatt"
AUDIENCE = "homewatt-api"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_API_KEY = re.compile(r"^hw_([a-f0-9]{16})_([A-Za-z0-9_-]{43})$")


class InvalidCredentials(CloudSyncError):
    """A token or key that does not authenticate; the message is safe to show the caller."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check; ``False`` for a user without a password or a malformed hash."""
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                                p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, _unb64(digest))


@dataclass(frozen=True)
class NewApiKey:
    """A key as created: ``plaintext`` is shown once and never stored."""

    key_id: str
    plaintext: str
    secret_sha256: str


def new_api_key() -> NewApiKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # 43 characters
    return NewApiKey(key_id, f"hw_{key_id}_{secret}", _sha256(secret))


def split_api_key(plaintext: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None`` (it may be a JWT)."""
    match = _API_KEY.match(plaintext)
    return (match.group(1), match.group(2)) if match else None


def api_key_matches(secret: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(_sha256(secret), stored_sha256)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def issue_token(user_id: str, secret: str, *, now_s: int, ttl_s: int) -> str:
    claims = {"sub": user_id, "iat": now_s, "exp": now_s + ttl_s, "iss": ISSUER,
              "aud": AUDIENCE}
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(token: str, secret: str, *, now_s: int, leeway_s: int = 10) -> str:
    """The user id of a valid token; raises :class:`InvalidCredentials` otherwise."""
    try:
        # PyJWT checks exp against its own clock; check it against ours (tests move time).
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE,
                            issuer=ISSUER, options={"verify_exp": False,
                                                    "require": ["sub", "exp", "iat"]})
    except jwt.PyJWTError as exc:
        raise InvalidCredentials(f"invalid access token: {exc}") from exc
    if not isinstance(claims["exp"], int) or claims["exp"] + leeway_s < now_s:
        raise InvalidCredentials("access token expired: log in again")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise InvalidCredentials("invalid access token: no subject")
    return subject
