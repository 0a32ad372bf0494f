"""An instance API in the shape of Trove's, showing each instance's latest fault.

    FAULTSVC_TARGET=127.0.0.1:50051 python examples/instance_api.py \\
        --listen 127.0.0.1:8779 INSTANCE_ID [INSTANCE_ID ...]

It serves the given instances under eventlet's WSGI server, as Trove's API
runs:

    GET /instances/ID  {"instance": {"id", "name", "status",
                                     "fault": {"created", "message", "details"}}}
    GET /instances     {"instances": [{"id", "name", "status",
                                       "fault": {"created", "message"}}, ...]}

`fault` is built as Trove's InstanceDetailView builds it, and is there only
when the instance has one; `details` (the stack trace) is null unless the
request is an admin's (keystonemiddleware's `X-Roles` header holds `admin`).
The list asks for the latest fault of every listed instance in one
BatchGetLatestFaults call, and shows no details.

faultsvc never breaks a page: when it is down or slow, the instance is shown
without its fault within `FAULT_BUDGET`, and a warning says why.
"""

from __future__ import annotations

if __name__ == "__main__":
    # Patched before anything else is imported, as an OpenStack API does:
    # every request is then a green thread.
    import eventlet  # type: ignore[import-untyped]

    eventlet.monkey_patch()

import argparse
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faultsvc.v1.fault_pb2 import Fault
from faultsvc_client import FaultServiceError, SyncFaultServiceClient
from faultsvc_client.client import DEFAULT_TARGET

LOG = logging.getLogger("instance_api")

# How long a page waits for faultsvc before it is shown without the fault.
FAULT_BUDGET = 0.2

ADMIN_ROLES = frozenset({"admin"})
# The role faultsvc knows admins by (its FAULTSVC_ADMIN_ROLES).
FAULTSVC_ADMIN_ROLE = "admin"

INSTANCE_PATH = re.compile(r"/instances/([^/]+)")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Instance:
    id: str
    name: str
    status: str


@dataclass(frozen=True)
class Caller:
    """Who is asking, from the headers keystonemiddleware sets."""

    is_admin: bool

    @classmethod
    def of(cls, environ: Mapping[str, Any]) -> Caller:
        roles = environ.get("HTTP_X_ROLES", "").split(",")
        return cls(is_admin=any(role.strip().lower() in ADMIN_ROLES for role in roles))

    @property
    def faultsvc_roles(self) -> list[str]:
        """The roles to ask faultsvc with: it gives admins the admin-only fields."""
        return [FAULTSVC_ADMIN_ROLE] if self.is_admin else []


class InstanceApi:
    """The WSGI application."""

    def __init__(self, faults: SyncFaultServiceClient, instances: Iterable[Instance]) -> None:
        self._faults = faults
        self._instances = {instance.id: instance for instance in instances}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET":
            return respond(start_response, "405 Method Not Allowed", {"error": "GET only"})
        caller = Caller.of(environ)
        if path.rstrip("/") == "/instances":
            return respond(start_response, "200 OK", self.list_instances(caller))
        match = INSTANCE_PATH.fullmatch(path)
        instance = self._instances.get(match.group(1)) if match else None
        if instance is None:
            return respond(start_response, "404 Not Found", {"error": "no such instance"})
        return respond(start_response, "200 OK", self.show_instance(instance, caller))

    def show_instance(self, instance: Instance, caller: Caller) -> dict[str, Any]:
        """Trove's InstanceDetailView, with the fault."""
        shown = instance_view(instance)
        fault = self.latest_fault(instance.id, caller)
        if fault is not None:
            shown["fault"] = detail_fault_view(fault, caller)
        return {"instance": shown}

    def list_instances(self, caller: Caller) -> dict[str, Any]:
        """Trove's InstancesView, each instance with its latest fault, without details."""
        instances = list(self._instances.values())
        faults = {fault.instance_id: fault for fault in self.latest_faults(instances, caller)}
        listed = []
        for instance in instances:
            shown = instance_view(instance)
            if instance.id in faults:
                shown["fault"] = list_fault_view(faults[instance.id])
            listed.append(shown)
        return {"instances": listed}

    def latest_fault(self, instance_id: str, caller: Caller) -> Fault | None:
        """The instance's latest fault; None when it has none, or faultsvc does not answer."""
        try:
            return self._faults.get_latest_fault(
                instance_id, roles=caller.faultsvc_roles, timeout=FAULT_BUDGET
            )
        except FaultServiceError as error:
            LOG.warning("showing instance %s without its fault: %s", instance_id, error)
            return None

    def latest_faults(self, instances: Sequence[Instance], caller: Caller) -> list[Fault]:
        """The latest fault of each instance that has one, in one call (at most 1,000)."""
        if not instances:
            return []
        try:
            return self._faults.batch_get_latest_faults(
                [instance.id for instance in instances],
                roles=caller.faultsvc_roles,
                timeout=FAULT_BUDGET,
            )
        except FaultServiceError as error:
            LOG.warning("listing %d instances without faults: %s", len(instances), error)
            return []


def instance_view(instance: Instance) -> dict[str, Any]:
    return {"id": instance.id, "name": instance.name, "status": instance.status}


def detail_fault_view(fault: Fault, caller: Caller) -> dict[str, Any]:
    """The fault as Trove's InstanceDetailView shows it: details for admins only."""
    return {
        "message": fault.message,
        # Trove shows its fault row's `updated`: it overwrites one row per
        # instance, so that is when the latest error happened. A faultsvc
        # fault is one error, and `create_time` is when it happened.
        "created": trove_time(fault),
        "details": fault.details if caller.is_admin else None,
    }


def list_fault_view(fault: Fault) -> dict[str, Any]:
    return {"message": fault.message, "created": trove_time(fault)}


def trove_time(fault: Fault) -> str:
    """The fault's time as Trove's JSON serializer writes datetimes: UTC, to the second."""
    return fault.create_time.ToDatetime().replace(microsecond=0).isoformat()


def respond(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def example_instances(ids: Sequence[str]) -> list[Instance]:
    return [Instance(id, f"db-{n}", "ERROR") for n, id in enumerate(ids, start=1)]


def main(argv: Sequence[str] | None = None) -> None:
    import eventlet.wsgi  # type: ignore[import-untyped]

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8779", metavar="HOST:PORT")
    parser.add_argument(
        "--target",
        default=os.environ.get("FAULTSVC_TARGET", DEFAULT_TARGET),
        metavar="HOST:PORT",
        help=f"faultsvc's address (default: $FAULTSVC_TARGET or {DEFAULT_TARGET})",
    )
    parser.add_argument("instance_ids", nargs="+", metavar="INSTANCE_ID")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    host, _, port = args.listen.rpartition(":")
    listener = eventlet.listen((host, int(port)))
    with SyncFaultServiceClient.connect(args.target) as faults:
        app = InstanceApi(faults, example_instances(args.instance_ids))
        LOG.info("serving on %s:%d", host, listener.getsockname()[1])
        eventlet.wsgi.server(listener, app, log_output=False)


if __name__ == "__main__":
    main()
