"""Authentication and authorisation of the cloud API.

Endpoints declare ``principal: CurrentPrincipal`` and ``access: CurrentAccess``, then call
``access.require_home / require_gateway / require_device(principal, id, permission)`` (404 for
what the caller may not see) or ``require_operator(principal)`` (403) before touching data.
"""

from cloud_sync.auth.access import Access, require_operator
from cloud_sync.auth.deps import AuthContext, CurrentAccess, CurrentPrincipal
from cloud_sync.auth.principal import Permission, Principal, Role

__all__ = ["Access", "AuthContext", "CurrentAccess", "CurrentPrincipal", "Permission",
           "Principal", "Role", "require_operator"]
