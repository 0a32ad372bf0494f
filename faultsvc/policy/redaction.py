"""Clearing admin-only fields, found from the descriptors' `(faultsvc.v1.admin_only)` option.

Nothing here names a field: marking a new field admin-only in the .proto is
all it takes for it to be stripped from every response, at any depth.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from faultsvc.v1 import options_pb2

# Set for the calls whose responses are stripped; each call runs in a task of its own.
_stripping: ContextVar[bool] = ContextVar("stripping_admin_only", default=False)


def stripping_admin_only() -> bool:
    """Whether the current call's responses lose their admin-only fields.

    So that the servicer does not read from the database what would be
    stripped (details of 64 KB each, for a caller who will never see them).
    """
    return _stripping.get()


def strip_admin_only_of_this_call() -> None:
    """Marks the current call as one whose responses are stripped (see stripping_admin_only)."""
    _stripping.set(True)


@dataclass(frozen=True)
class _Plan:
    """What to clear in one message type: its own admin-only fields, and where to descend."""

    admin_only: tuple[str, ...]
    nested: tuple[FieldDescriptor, ...]

    @property
    def is_empty(self) -> bool:
        return not self.admin_only and not self.nested


def is_admin_only(field: FieldDescriptor) -> bool:
    return bool(field.GetOptions().Extensions[options_pb2.admin_only])


def contains_admin_only(descriptor: Descriptor) -> bool:
    return not _plan(descriptor).is_empty


def strip_admin_only(message: Message) -> None:
    """Clears, in place, every admin-only field in `message` and the messages inside it."""
    plan = _plan(message.DESCRIPTOR)
    for name in plan.admin_only:
        message.ClearField(name)
    for field in plan.nested:
        value = getattr(message, field.name)
        if _is_map(field):
            children = list(value.values())
        elif field.is_repeated:
            children = list(value)
        elif message.HasField(field.name):
            children = [value]
        else:
            children = []
        for child in children:
            strip_admin_only(child)


@cache
def _plan(descriptor: Descriptor) -> _Plan:
    return _build_plan(descriptor, frozenset())


def _build_plan(descriptor: Descriptor, visiting: frozenset[str]) -> _Plan:
    visiting = visiting | {descriptor.full_name}
    admin_only = []
    nested = []
    for field in descriptor.fields:
        if is_admin_only(field):
            admin_only.append(field.name)
        elif field.message_type is not None and _may_hold_admin_only(field, visiting):
            nested.append(field)
    return _Plan(tuple(admin_only), tuple(nested))


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _may_hold_admin_only(field: FieldDescriptor, visiting: frozenset[str]) -> bool:
    message_type = field.message_type
    if message_type is not None and _is_map(field):
        message_type = message_type.fields_by_name["value"].message_type
    if message_type is None:
        return False
    if message_type.full_name in visiting:
        # A recursive type: it holds admin-only fields only if some other field says so.
        return True
    return not _build_plan(message_type, visiting).is_empty
