"""Who may read across instances: admins; anyone else one instance at a time, and not by host."""

from __future__ import annotations

from faultsvc.errors import PermissionDenied
from faultsvc.filters import FaultFilter
from faultsvc.policy.redaction import is_admin_only, stripping_admin_only
from faultsvc.v1 import fault_pb2

_FAULT_FIELDS = fault_pb2.Fault.DESCRIPTOR.fields_by_name


def require_admin(what: str) -> None:
    """PERMISSION_DENIED unless the caller is an admin; `what` says why it must be one."""
    if stripping_admin_only():
        raise PermissionDenied(f"{what} is for admins: it reads every instance's faults")


def check_watch_scope(fault_filter: FaultFilter) -> None:
    """A caller that is not an admin watches one instance, and compares no admin-only field.

    Comparing an admin-only field (the host) would tell what the field holds
    by what arrives; which fields those are, the contract's descriptors say.
    """
    if not stripping_admin_only():
        return
    if "instance_id" not in fault_filter.equal:
        raise PermissionDenied(
            'watching every instance is for admins: add instance_id = "..." to the filter'
        )
    hidden = sorted(
        name
        for name in fault_filter.equal
        if name in _FAULT_FIELDS and is_admin_only(_FAULT_FIELDS[name])
    )
    if hidden:
        raise PermissionDenied(f"comparing {', '.join(hidden)} is for admins")
