"""Semantic Versioning 2.0.0 parsing and precedence (https://semver.org), pure.

Precedence ignores build metadata; a pre-release sorts before its release, and pre-release
identifiers compare numerically when both are numbers, else as ASCII, numbers first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

from firmware_update.errors import BadInput

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = field(default="", compare=False)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        return text + (f"+{self.build}" if self.build else "")

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # a release (no pre-release) sorts after every pre-release of the same triple
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()


def parse_version(text: str, field_name: str = "version") -> Version:
    """Parse ``1.2.3``, ``1.2.3-rc.1``, ``1.2.3+build.5``; raises ``BadInput`` naming the field."""
    match = _SEMVER.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise BadInput(f"{field_name}: {text!r} is not a semantic version (like 1.4.2 or "
                       "2.0.0-rc.1)")
    major, minor, patch, pre, build = match.groups()
    return Version(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else (),
                   build or "")


def is_version(text: str) -> bool:
    return isinstance(text, str) and _SEMVER.match(text) is not None
