"""Who is calling and what they may do: roles, permissions and the :class:`Principal`.

Pure decisions, no I/O: the request layer builds a ``Principal`` from a verified JWT or API key
plus the caller's current memberships (read from the database on every request, so removing a
member takes effect at once), and every endpoint asks it one question.

Roles are per home. ``owner`` does everything in the home, including its members; ``member``
sees and controls its devices; ``installer`` sees, controls (to commission devices) and adds
gateways and devices, but cannot manage members. ``operator`` is fleet-wide (support and
operations staff): every home, and the fleet endpoints (dead letters, rollouts, stats).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    OWNER = "owner"
    MEMBER = "member"
    INSTALLER = "installer"


Permission = Literal["read", "control", "install", "manage"]
"""``read`` data and state; ``control`` devices (commands, shadow desired state); ``install``
gateways and devices; ``manage`` the home itself and its members."""

GRANTS: dict[Role, frozenset[str]] = {
    Role.OWNER: frozenset({"read", "control", "install", "manage"}),
    Role.MEMBER: frozenset({"read", "control"}),
    Role.INSTALLER: frozenset({"read", "control", "install"}),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``subject`` identifies it for rate limits and logs (``user:<id>`` or ``key:<id>``);
    ``user_id`` is the user behind it (an API key's creator, ``None`` for a key made by an
    operator with the admin CLI); ``homes`` maps each home it may touch to its role there.
    """

    subject: str
    user_id: str | None
    operator: bool = False
    homes: Mapping[str, Role] = field(default_factory=dict)

    def may(self, home_id: str | None, permission: Permission) -> bool:
        """Whether this caller has ``permission`` on ``home_id`` (``None``: a gateway or
        device not assigned to any home yet, which only operators see)."""
        if self.operator:
            return True
        if home_id is None:
            return False
        role = self.homes.get(home_id)
        return role is not None and permission in GRANTS[role]

    def can_grant(self, home_id: str, role: Role) -> bool:
        """An API key or a new member may get at most what its creator holds."""
        if self.operator:
            return True
        held = self.homes.get(home_id)
        return held is not None and GRANTS[role] <= GRANTS[held]

    @property
    def home_ids(self) -> list[str]:
        return sorted(self.homes)
