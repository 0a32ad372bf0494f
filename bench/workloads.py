"""The calls the benchmark makes: one request per workload, sized like real traffic."""

from __future__ import annotations

from dataclasses import dataclass

from bench import seed
from faultsvc.v1 import fault_service_pb2 as pb

SERVICE = "/faultsvc.v1.FaultService/"
ADMIN_HEADER = "x-roles: admin"
RECORD_PREFIX = "bench-record-"
BATCH_SIZE = 1000
LATEST_INSTANCE = 4242

RECORD_MESSAGE = (
    "Instance failed to resize: the guest agent did not answer within 600 seconds "
    "(flavor 4 -> 7, volume 20 GB)"
)
RECORD_DETAILS = (
    "Traceback (most recent call last):\n"
    '  File "/opt/trove/trove/taskmanager/models.py", line 1510, in resize_flavor\n'
    "    self._resize_flavor(old_flavor, new_flavor)\n"
    '  File "/opt/trove/trove/taskmanager/models.py", line 1562, in _resize_flavor\n'
    "    self.guest.restart()\n"
    '  File "/opt/trove/trove/guestagent/api.py", line 399, in restart\n'
    '    self._call("restart", self.agent_high_timeout, version=version)\n'
    '  File "/opt/trove/trove/guestagent/api.py", line 91, in _call\n'
    "    result = cctxt.call(self.context, method_name, **kwargs)\n"
    '  File "/usr/lib/python3/dist-packages/oslo_messaging/rpc/client.py", line 190, in call\n'
    "    result = self.transport._send(\n"
    '  File "/usr/lib/python3/dist-packages/oslo_messaging/transport.py", line 123, in _send\n'
    "    return self._driver.send(target, ctxt, message,\n"
    '  File "/usr/lib/python3/dist-packages/oslo_messaging/_drivers/amqpdriver.py", '
    "line 689, in send\n"
    "    return self._send(target, ctxt, message, wait_for_reply, timeout,\n"
    '  File "/usr/lib/python3/dist-packages/oslo_messaging/_drivers/amqpdriver.py", '
    "line 678, in _send\n"
    "    result = self._waiter.wait(msg_id, timeout,\n"
    "oslo_messaging.exceptions.MessagingTimeout: Timed out waiting for a reply to "
    "message ID 6f0d3c2e9a8b4f7e8d1c2b3a4f5e6d7c\n"
)


@dataclass(frozen=True, slots=True)
class Workload:
    """One RPC with one request (a few, for writes), as an admin or not.

    The rows a writing workload adds belong to instances named `instance_prefix`...
    """

    name: str
    method: str
    requests: tuple[bytes, ...]
    admin: bool = False
    writes: bool = False
    instance_prefix: str = ""

    @property
    def path(self) -> str:
        return SERVICE + self.method

    @property
    def headers(self) -> tuple[str, ...]:
        return (ADMIN_HEADER,) if self.admin else ()

    def bodies(self, processes: int) -> list[bytes]:
        """One request per h2load process: distinct ones when the workload has several."""
        return [self.requests[index % len(self.requests)] for index in range(processes)]


def record_request(instance: str) -> bytes:
    return pb.RecordFaultRequest(
        instance_id=instance,
        message=RECORD_MESSAGE,
        details=RECORD_DETAILS,
        source="taskmanager",
        host="trove-taskmanager-2",
    ).SerializeToString()


def build(data: seed.Seed, run_id: str, writers: int) -> list[Workload]:
    """The workloads, reads first: they must see the seeded table as it was seeded.

    RecordFault gets `writers` distinct instances, one per h2load process; the
    server makes each occurrence's id, so every call counts one more occurrence.
    """
    latest = pb.GetLatestFaultRequest(
        instance_id=seed.instance_id(seed.live_instance(data, LATEST_INSTANCE))
    ).SerializeToString()
    instances = seed.spread_instances(data, BATCH_SIZE)
    batch = pb.BatchGetLatestFaultsRequest(instance_ids=instances).SerializeToString()
    full_batch = pb.BatchGetLatestFaultsRequest(
        instance_ids=instances, view=pb.FAULT_VIEW_FULL
    ).SerializeToString()
    history = pb.ListFaultsRequest(instance_id=seed.BUSY_INSTANCE).SerializeToString()
    prefix = f"{RECORD_PREFIX}{run_id}-"
    records = tuple(record_request(f"{prefix}{index}") for index in range(writers))
    return [
        Workload("GetLatestFault", "GetLatestFault", (latest,)),
        Workload("GetLatestFault admin", "GetLatestFault", (latest,), admin=True),
        Workload("BatchGetLatestFaults 1000", "BatchGetLatestFaults", (batch,)),
        Workload(
            "BatchGetLatestFaults 1000 FULL", "BatchGetLatestFaults", (full_batch,), admin=True
        ),
        Workload("ListFaults first page", "ListFaults", (history,)),
        Workload("RecordFault", "RecordFault", records, writes=True, instance_prefix=prefix),
    ]
