"""A service component that reports its instances' faults to faultsvc.

    FAULTSVC_TARGET=127.0.0.1:50051 python examples/component.py INSTANCE_ID

It wires both paths of the spec: an error the component notifies becomes a
fault through the `faultsvc` notifier driver, and an error no notification
carries is reported directly. Neither ever blocks the component or fails it
when faultsvc is down: the faults wait in memory until it is back.
"""

from __future__ import annotations

import argparse
import os
import warnings

# oslo.messaging imports eventlet, which warns at import that it is
# deprecated; this component does not use it.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

from faultsvc_client import FaultReporter, SyncFaultReporter  # noqa: E402


class GuestError(Exception):
    """An error written for the instance's owner: declared safe to show."""


def prepare_guest(instance_id: str) -> None:
    raise GuestError(f"A guest error occurred on {instance_id}")


def main(instance_id: str) -> None:
    target = os.environ.get("FAULTSVC_TARGET", "127.0.0.1:50051")

    # The notification callback. A real service sets this in its config file
    #   [oslo_messaging_notifications]
    #   driver = messagingv2
    #   driver = faultsvc
    # and keeps its own transport URL; the driver reads [faultsvc] target,
    # else $FAULTSVC_TARGET.
    conf = cfg.ConfigOpts()
    conf(args=[], project="example")
    transport = oslo_messaging.get_notification_transport(conf, url="fake:")
    notifier = oslo_messaging.Notifier(transport, "taskmanager.example", driver="faultsvc")

    # The direct call, for errors no notification carries. Any exception but
    # a GuestError is shown by its class name, its text kept for admins.
    with SyncFaultReporter(
        FaultReporter(target, source="taskmanager", safe_exception_types=[GuestError])
    ) as reporter:
        notifier.error(
            {},
            "taskmanager.create_instance.error",
            {"instance_id": instance_id, "message": "Volume creation failed"},
        )
        try:
            with reporter.reporting(instance_id):
                prepare_guest(instance_id)
        except GuestError:
            pass  # handled as the component always did; the fault is on its way
        reporter.flush(timeout=10)


def parse_instance_id() -> str:
    parser = argparse.ArgumentParser(description="Report two faults of an instance to faultsvc.")
    parser.add_argument("instance_id", metavar="INSTANCE_ID", help="the instance at fault")
    instance_id: str = parser.parse_args().instance_id
    return instance_id


if __name__ == "__main__":
    main(parse_instance_id())
