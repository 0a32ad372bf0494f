"""The `faultsvc` notifier driver, configured as the README shows, fed as Trove and Nova feed it.

Every notification goes through a real `oslo_messaging.Notifier` (the
`fake:` transport) with the serializer of the service that sends it, to the
driver loaded by name from the README's own configuration block, and on to
the real server; each test then reads the stored fault.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oslo_messaging  # type: ignore[import-untyped]
import pytest
from oslo_config import cfg
from oslo_context.context import RequestContext

from faultsvc.app import FaultServer
from faultsvc.v1.fault_pb2 import Fault
from faultsvc_client import FaultServiceClient
from tests.clients import openstack
from tests.clients.openstack import INTERNAL_ADDRESS
from tests.clients.processes import ROOT

GLOBAL_REQUEST_ID = "req-0b8f6b2a-7e0f-4b1e-8a0e-9d6c1e2f3a4b"
README_SECTION = "### Error notifications (oslo.messaging)"


def readme_config_block() -> str:
    """The first ini block of the README's section on notifications, as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(README_SECTION) :]
    found = re.search(r"```ini\n(.*?)```", section, re.DOTALL)
    assert found is not None, "the README shows no ini block for notifications"
    return found[1]


def load_config(*files: Path) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf(args=[], project="service", default_config_files=[str(f) for f in files])
    return conf


@pytest.fixture
def readme_config(tmp_path: Path, server: FaultServer) -> cfg.ConfigOpts:
    """The README's block in a service's config file; a later file points it at the test server."""
    readme_file = tmp_path / "service.conf"
    readme_file.write_text(readme_config_block())
    here = tmp_path / "here.conf"
    here.write_text(f"[faultsvc]\ntarget = {server.target}\n")
    return load_config(readme_file, here)


@pytest.fixture
def transport(readme_config: cfg.ConfigOpts) -> Any:
    transport = oslo_messaging.get_notification_transport(readme_config, url="fake:")
    yield transport
    transport.cleanup()


async def faults_once_there_are(target: str, instance: str, count: int) -> list[Fault]:
    async with FaultServiceClient.connect(target, roles=["admin"]) as client:
        async with asyncio.timeout(15):
            while True:
                history = [fault async for fault in client.iter_faults(instance)]
                if len(history) >= count:
                    return history
                await asyncio.sleep(0.05)


def test_readme_block_reads_as_meant(tmp_path: Path) -> None:
    config_file = tmp_path / "service.conf"
    config_file.write_text(readme_config_block())
    conf = load_config(config_file)
    transport = oslo_messaging.get_notification_transport(conf, url="fake:")
    try:
        notifier = oslo_messaging.Notifier(transport)
        assert notifier.is_enabled()
        assert conf.oslo_messaging_notifications.driver == ["messagingv2", "faultsvc"]
        assert conf.faultsvc.target == "faultsvc.example:50051"
        assert conf.faultsvc.safe_exception_types == ["nova.exception", "trove.common.exception"]
    finally:
        transport.cleanup()


@dataclass(frozen=True)
class Shape:
    """A kind of error notification: how its sender sends it, and where it says it came from."""

    send: Callable[[Any, str, BaseException], None]
    notifier: Callable[[Any], Any]
    source: str
    host: str


SHAPES = {
    "trove taskmanager": Shape(
        openstack.send_trove_taskmanager_error,
        openstack.trove_notifier,
        "taskmanager",
        socket.gethostname(),  # Trove names 0.0.0.0: the reporting process's host stands
    ),
    "trove guest via conductor": Shape(
        openstack.send_trove_guest_error, openstack.trove_notifier, "guest", socket.gethostname()
    ),
    "nova versioned instance action": Shape(
        lambda n, i, e: openstack.send_nova_instance_action_error(n, i, "volume_attach", e),
        openstack.nova_notifier,
        "nova-compute",
        openstack.COMPUTE_HOST,
    ),
    "nova versioned compute task": Shape(
        openstack.send_nova_compute_task_error,
        openstack.nova_notifier,
        "nova-conductor",
        openstack.CONDUCTOR_HOST,
    ),
    "nova legacy instance": Shape(
        lambda n, i, e: openstack.send_nova_legacy_instance_error(n, i, "create", e),
        openstack.nova_notifier,
        "compute",
        openstack.COMPUTE_HOST,
    ),
    "nova legacy wrap_exception": Shape(
        lambda n, i, e: openstack.send_nova_wrapped_exception(n, i, "attach_volume", e),
        openstack.nova_notifier,
        "compute",
        openstack.COMPUTE_HOST,
    ),
    "nova legacy scheduling": Shape(
        openstack.send_nova_scheduling_error,
        openstack.nova_notifier,
        "compute_task",
        openstack.CONDUCTOR_HOST,
    ),
}

# The service's own user-facing errors, declared safe in the README's block.
OWN_ERRORS = {
    "trove": openstack.VolumeCreationFailure("Failed to create a volume in Nova."),
    "nova": openstack.NoValidHost(reason="There are not enough hosts available."),
}
FOREIGN_ERROR = openstack.OperationalError(
    f"(2003, \"Can't connect to MySQL server on '{INTERNAL_ADDRESS}' (timed out)\")"
)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
async def test_each_shape_lands_on_the_fault_with_only_safe_text_in_its_message(
    shape: Shape, server: FaultServer, transport: Any
) -> None:
    notifier = shape.notifier(transport)
    own_error = OWN_ERRORS["trove" if shape.notifier is openstack.trove_notifier else "nova"]
    own, foreign = str(uuid.uuid4()), str(uuid.uuid4())

    shape.send(notifier, own, own_error)
    shape.send(notifier, foreign, FOREIGN_ERROR)

    [own_fault] = await faults_once_there_are(server.target, own, 1)
    [foreign_fault] = await faults_once_there_are(server.target, foreign, 1)
    assert own_fault.message == str(own_error)
    assert str(own_error) in own_fault.details
    assert foreign_fault.message == "OperationalError"
    assert INTERNAL_ADDRESS in foreign_fault.details
    for fault in (own_fault, foreign_fault):
        assert (fault.source, fault.host) == (shape.source, shape.host)
        assert "\n," not in fault.details  # Nova's comma-joined traceback, rejoined


@pytest.mark.parametrize(
    "shape",
    [s for name, s in SHAPES.items() if "legacy" not in name],
    ids=[name for name in SHAPES if "legacy" not in name],
)
async def test_tracebacks_are_stored_as_python_prints_them(
    shape: Shape, server: FaultServer, transport: Any
) -> None:
    instance = str(uuid.uuid4())
    shape.send(shape.notifier(transport), instance, FOREIGN_ERROR)

    [fault] = await faults_once_there_are(server.target, instance, 1)
    assert fault.details.startswith("Traceback (most recent call last):\n  File ")
    assert ", in raised\n" in fault.details
    assert fault.details.rstrip().endswith(f"pymysql.err.OperationalError: {FOREIGN_ERROR}")


async def test_nova_exceptions_in_legacy_payloads_are_read_out_of_their_repr(
    server: FaultServer, transport: Any
) -> None:
    instance = str(uuid.uuid4())
    error = openstack.VolumeAttachFailed(volume_id="vol-1", reason="device busy")

    openstack.send_nova_wrapped_exception(
        openstack.nova_notifier(transport), instance, "attach_volume", error
    )

    [fault] = await faults_once_there_are(server.target, instance, 1)
    assert fault.message == "Volume vol-1 could not be attached. Reason: device busy"
    assert fault.details == f"VolumeAttachFailed: {error}"


async def test_notifications_that_are_no_errors_are_ignored(
    server: FaultServer, transport: Any
) -> None:
    instance = str(uuid.uuid4())
    trove, nova = openstack.trove_notifier(transport), openstack.nova_notifier(transport)

    openstack.send_trove_non_errors(trove, instance)
    openstack.send_nova_non_errors(nova, instance)
    # Faults are delivered in order: once this one is there, any earlier one would be too.
    openstack.send_trove_taskmanager_error(trove, instance, FOREIGN_ERROR)

    history = await faults_once_there_are(server.target, instance, 1)
    assert [fault.message for fault in history] == ["OperationalError"]


async def test_a_faults_request_ids_come_from_the_notifications_context(
    server: FaultServer, transport: Any
) -> None:
    instance = str(uuid.uuid4())
    context = RequestContext(global_request_id=GLOBAL_REQUEST_ID, overwrite=False)

    # No serializer: the driver gets the RequestContext itself.
    oslo_messaging.Notifier(transport, publisher_id="conductor.c-1").error(
        context, "conductor.prepare", {"instance_id": instance, "message": "prepare failed"}
    )

    [fault] = await faults_once_there_are(server.target, instance, 1)
    assert (fault.request_id, fault.global_request_id) == (context.request_id, GLOBAL_REQUEST_ID)
    assert fault.request_id.startswith("req-")


@pytest.mark.parametrize(
    ("shape_name", "request_id"),
    [
        # The context names the request; Trove's payload repeats it.
        ("trove taskmanager", "req-6c1d0b84-2f5e-4d4c-9f3c-1a4a1f1e2a11"),
        # The conductor notifies with an empty context: the payload's request id stands.
        ("trove guest via conductor", "req-0f3e2b7a-8c1d-4e59-b6a2-3d4c5e6f7a8b"),
        # Nova's versioned payloads carry the request id too.
        ("nova versioned instance action", "req-5b2e8f0a-9d4c-4b1e-8a7f-6c3d2e1f0a9b"),
    ],
)
async def test_a_payloads_request_id_stands_when_the_context_has_none(
    server: FaultServer, transport: Any, shape_name: str, request_id: str
) -> None:
    instance = str(uuid.uuid4())
    shape = SHAPES[shape_name]
    shape.send(shape.notifier(transport), instance, FOREIGN_ERROR)

    [fault] = await faults_once_there_are(server.target, instance, 1)
    assert fault.request_id == request_id


@pytest.mark.parametrize(
    "bad_id", ["r" * 65_536, "req 1", "req-\n", 12345, ["req-1"], {"id": "req-1"}]
)
async def test_a_bad_request_id_in_a_notification_is_left_out_not_the_fault(
    server: FaultServer, transport: Any, bad_id: Any
) -> None:
    instance = str(uuid.uuid4())
    oslo_messaging.Notifier(transport, publisher_id="conductor.c-1").error(
        {"request_id": bad_id, "global_request_id": bad_id},
        "conductor.prepare",
        {"instance_id": instance, "message": "prepare failed", "request_id": bad_id},
    )

    [fault] = await faults_once_there_are(server.target, instance, 1)
    assert (fault.message, fault.request_id, fault.global_request_id) == ("prepare failed", "", "")
