"""A service component that reports its instances' faults to faultsvc.

    FAULTSVC_TARGET=127.0.0.1:50051 python examples/component.py INSTANCE_ID

It wires both paths of the spec: an error the component notifies becomes a
fault through the `faultsvc` notifier driver, and an error no notification
carries is reported directly. Neither ever blocks the component or fails it
when faultsvc is down: the faults wait in memory until it is back.
"""

from __future__ import annotations

import os
import sys

import oslo_messaging
from oslo_config import cfg

from faultsvc_client import SyncFaultReporter


def prepare_guest(instance_id: str) -> None:
    raise RuntimeError(f"A guest error occurred on {instance_id}")


def main(instance_id: str) -> None:
    target = os.environ.get("FAULTSVC_TARGET", "127.0.0.1:50051")

    # The notification callback. A real service sets this in its config file
    # ([oslo_messaging_notifications] driver = messagingv2,faultsvc) and keeps
    # its own transport URL; the driver reads [faultsvc] target, else
    # $FAULTSVC_TARGET.
    conf = cfg.ConfigOpts()
    conf(args=[], project="example")
    transport = oslo_messaging.get_notification_transport(conf, url="fake:")
    notifier = oslo_messaging.Notifier(transport, "taskmanager.example", driver="faultsvc")

    # The direct call, for errors no notification carries.
    with SyncFaultReporter(target, source="taskmanager") as reporter:
        notifier.error(
            {},
            "taskmanager.create_instance.error",
            {"instance_id": instance_id, "message": "Volume creation failed"},
        )
        try:
            with reporter.reporting(instance_id):
                prepare_guest(instance_id)
        except RuntimeError:
            pass  # handled as the component always did; the fault is on its way
        reporter.flush(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1])
