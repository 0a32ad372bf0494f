"""Who is an admin, and what is stripped for everyone else."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.timestamp_pb2 import Timestamp

from faultsvc.policy.redaction import contains_admin_only, strip_admin_only
from faultsvc.policy.roles import AdminPolicy, roles_in
from faultsvc.v1 import fault_pb2, fault_service_pb2, options_pb2
from tests.support.redaction import admin_only_values


def test_roles_are_comma_separated_case_and_space_insensitive() -> None:
    assert roles_in([("x-roles", " Member ,ADMIN,, ")]) == {"member", "admin"}
    assert roles_in(None) == frozenset()


def test_admin_roles_are_configurable() -> None:
    policy = AdminPolicy(["cloud-admin", "Operator"])
    assert policy.is_admin([("x-roles", "operator")])
    assert not policy.is_admin([("x-roles", "admin")])


def test_malformed_metadata_is_not_admin() -> None:
    policy = AdminPolicy(["admin"])
    assert not policy.is_admin([("x-roles", b"admin")])
    assert not policy.is_admin([("x-roles",)])  # type: ignore[list-item]
    assert not policy.is_admin(42)  # type: ignore[arg-type]


def test_details_is_marked_admin_only_in_the_contract() -> None:
    details = fault_pb2.Fault.DESCRIPTOR.fields_by_name["details"]
    assert details.GetOptions().Extensions[options_pb2.admin_only]


def test_strips_fault_details_in_every_response_shape() -> None:
    fault = fault_pb2.Fault(id="1", message="m", details="trace", create_time=Timestamp(seconds=1))
    responses = [
        fault_service_pb2.GetLatestFaultResponse(fault=fault),
        fault_service_pb2.BatchGetLatestFaultsResponse(faults=[fault, fault]),
        fault_service_pb2.ListFaultsResponse(faults=[fault], next_page_token="t"),
    ]
    for response in responses:
        strip_admin_only(response)
        assert admin_only_values(response) == []
        assert "message" in str(response)
    assert not contains_admin_only(fault_service_pb2.ClearFaultsResponse.DESCRIPTOR)


def test_a_new_admin_only_field_is_stripped_with_no_code() -> None:
    """A message type made at run time, with admin-only fields in a map and a recursive type."""
    pool = descriptor_pool.Default()
    proto = descriptor_pb2.FileDescriptorProto(
        name="tests/future.proto", package="future", dependency=["faultsvc/v1/options.proto"]
    )
    node = proto.message_type.add(name="Node")
    secret = node.field.add(name="secret", number=1, type=9, label=1)
    secret.options.Extensions[options_pb2.admin_only] = True
    node.field.add(name="public", number=2, type=9, label=1)
    node.field.add(name="child", number=3, type=11, label=1, type_name=".future.Node")
    entry = node.nested_type.add(name="ByNameEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=9, label=1)
    entry.field.add(name="value", number=2, type=11, label=1, type_name=".future.Node")
    node.field.add(name="by_name", number=4, type=11, label=3, type_name=".future.Node.ByNameEntry")
    pool.Add(proto)
    node_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("future.Node"))

    message: Any = node_class(secret="s", public="p")
    message.child.secret = "s"
    message.child.child.secret = "s"
    message.by_name["x"].secret = "s"
    strip_admin_only(message)
    assert admin_only_values(message) == []
    assert message.public == "p"
