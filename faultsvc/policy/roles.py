"""Who is an admin: the `x-roles` metadata convention (as keystone's X-Roles header)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

ROLES_METADATA_KEY = "x-roles"

Metadata = Sequence[tuple[str, str | bytes]] | None


def roles_in(metadata: Metadata) -> frozenset[str]:
    """The roles named in every `x-roles` entry: comma-separated, case and spaces ignored."""
    roles: set[str] = set()
    for key, value in metadata or ():
        if key.lower() == ROLES_METADATA_KEY and isinstance(value, str):
            roles.update(role.strip().lower() for role in value.split(","))
    roles.discard("")
    return frozenset(roles)


class AdminPolicy:
    """Decides from a call's metadata whether its caller may see admin-only fields."""

    def __init__(self, admin_roles: Iterable[str]) -> None:
        self._admin_roles = frozenset(role.strip().lower() for role in admin_roles)

    def is_admin(self, metadata: Metadata) -> bool:
        try:
            return not self._admin_roles.isdisjoint(roles_in(metadata))
        except Exception:  # malformed metadata: when in doubt, strip
            return False
