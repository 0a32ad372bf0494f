"""The `faultsvc` oslo.messaging notifier driver, loaded by name as a service loads it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import oslo_messaging  # type: ignore[import-untyped]
from oslo_config import cfg

from faultsvc.v1.fault_pb2 import Fault
from faultsvc_client import FaultServiceClient
from tests.support.servers import ServerProcess

TRACEBACK = """Traceback (most recent call last):
  File "/opt/trove/taskmanager/models.py", line 512, in create_instance
    volume_info = self._create_volume(volume_size)
trove.common.exception.VolumeCreationFailure: Failed to create a volume in Nova."""


def service_config(tmp_path: Path, target: str) -> cfg.ConfigOpts:
    """A service's configuration with the driver enabled, read from its config file."""
    config_file = tmp_path / "taskmanager.conf"
    config_file.write_text(
        f"[oslo_messaging_notifications]\ndriver = faultsvc\n[faultsvc]\ntarget = {target}\n"
    )
    conf = cfg.ConfigOpts()
    conf(args=[], project="taskmanager", default_config_files=[str(config_file)])
    return conf


async def faults_once_there_are(target: str, instance: str, count: int) -> list[Fault]:
    async with FaultServiceClient.connect(target, roles=["admin"]) as client:
        async with asyncio.timeout(15):
            while True:
                history = [fault async for fault in client.iter_faults(instance)]
                if len(history) >= count:
                    return history
                await asyncio.sleep(0.05)


async def test_error_notifications_become_faults_and_others_are_ignored(
    faultsvc_process: ServerProcess, tmp_path: Path
) -> None:
    instance = str(uuid.uuid4())
    conf = service_config(tmp_path, faultsvc_process.target)
    transport = oslo_messaging.get_notification_transport(conf, url="fake:")
    notifier = oslo_messaging.Notifier(transport, publisher_id="taskmanager.tm-1")
    context: dict[str, str] = {}

    notifier.info(context, "dbaas.instance_create.start", {"instance_id": instance})
    notifier.warn(context, "dbaas.instance_update", {"instance_id": instance, "message": "slow"})
    notifier.info(
        context,
        "dbaas.instance_create.error",
        {"instance_id": instance, "message": "Volume creation failed", "exception": TRACEBACK},
    )
    notifier.error(
        context,
        "compute.instance.reboot",
        {"instance": {"uuid": instance}, "message": "Reboot failed"},
    )

    history = await faults_once_there_are(faultsvc_process.target, instance, 2)
    await asyncio.sleep(0.5)  # time enough for an unwanted third fault to arrive
    history = await faults_once_there_are(faultsvc_process.target, instance, 2)

    assert [(fault.message, fault.details) for fault in history] == [
        ("Reboot failed", ""),
        ("Volume creation failed", TRACEBACK),
    ]
    assert {(fault.source, fault.host) for fault in history} == {("taskmanager", "tm-1")}
