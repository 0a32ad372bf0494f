"""faultsvc on a real three-node MariaDB Galera cluster (scripts/galera/cluster).

Servers on different nodes see each other's faults at once; concurrent
writes of one fault through two nodes store it once; killing the node a
server uses under load costs no acknowledged fault, and the node comes back.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.galera import NODES, GaleraCluster
from tests.support.load import HealthWatch, Load
from tests.support.servers import ServerProcess

SERVER_ENV = {"FAULTSVC_HEALTH_CHECK_SECONDS": "0.5"}
LOAD_SECONDS_AFTER_KILL = 6.0


def serve(database_url: str, log_path: Path) -> ServerProcess:
    return ServerProcess(
        database_url, extra_args=["--workers", "1"], env=SERVER_ENV, log_path=log_path
    ).start()


@pytest.fixture
def node1_and_node2_servers(
    galera: GaleraCluster, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    first = serve(galera.url(1), tmp_path / "faultsvc-node1.log")
    try:
        second = serve(galera.url(2), tmp_path / "faultsvc-node2.log")
        try:
            yield first, second
        finally:
            second.kill()
    finally:
        first.kill()


async def test_a_fault_recorded_through_one_node_is_read_at_once_through_another(
    node1_and_node2_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = node1_and_node2_servers
    async with (
        grpc.aio.insecure_channel(first.target) as channel1,
        grpc.aio.insecure_channel(second.target) as channel2,
    ):
        via_node1 = fault_service_pb2_grpc.FaultServiceStub(channel1)
        via_node2 = fault_service_pb2_grpc.FaultServiceStub(channel2)
        for n in range(100):
            instance_id = f"cross-{uuid.uuid4()}"
            recorded = await via_node1.RecordFault(
                pb.RecordFaultRequest(instance_id=instance_id, message=f"fault {n}")
            )
            latest = await via_node2.GetLatestFault(
                pb.GetLatestFaultRequest(instance_id=instance_id)
            )
            assert latest.fault.id == recorded.fault.id, f"node 2 missed fault {n}"
            cleared = await via_node2.ClearFaults(pb.ClearFaultsRequest(instance_id=instance_id))
            assert cleared.cleared_count == 1
            after = await via_node1.GetLatestFault(
                pb.GetLatestFaultRequest(instance_id=instance_id)
            )
            assert not after.HasField("fault"), f"node 1 still shows cleared fault {n}"


async def record_through_both(
    servers: tuple[ServerProcess, ServerProcess], requests: list[pb.RecordFaultRequest]
) -> list[pb.RecordFaultResponse]:
    """Sends every request through both servers at once; the answers, in that order."""
    async with (
        grpc.aio.insecure_channel(servers[0].target) as channel1,
        grpc.aio.insecure_channel(servers[1].target) as channel2,
    ):
        stubs = [fault_service_pb2_grpc.FaultServiceStub(c) for c in (channel1, channel2)]
        return await asyncio.gather(
            *(stub.RecordFault(request, timeout=20) for request in requests for stub in stubs)
        )


async def test_one_fault_id_written_through_two_nodes_at_once_is_stored_once(
    galera: GaleraCluster,
    node1_and_node2_servers: tuple[ServerProcess, ServerProcess],
    tmp_path: Path,
) -> None:
    """The two inserts conflict at certification; the loser retries and finds the winner's row."""
    instance_id = f"twice-{uuid.uuid4()}"
    fault_ids = [str(uuid.uuid4()) for _ in range(200)]
    answers = await record_through_both(
        node1_and_node2_servers,
        [
            pb.RecordFaultRequest(
                instance_id=instance_id,
                message="reboot failed",
                fault_id=fault_id,
                fingerprint=fault_id,  # a fault of its own, not a repeat
            )
            for fault_id in fault_ids
        ],
    )
    by_id: dict[str, set[tuple[int, int]]] = {}
    for answer in answers:
        created = answer.fault.create_time
        by_id.setdefault(answer.fault.id, set()).add((created.seconds, created.nanos))
    assert set(by_id) == set(fault_ids)
    assert all(len(dates) == 1 for dates in by_id.values()), "two versions of one fault"
    rows = galera.query(
        3,
        f"SELECT id, COUNT(*) FROM instance_faults WHERE instance_id = '{instance_id}' GROUP BY id",
    )
    assert sorted(str(row[0]) for row in rows) == sorted(fault_ids)
    print(f"\ncertification conflicts retried: {conflicts_retried(tmp_path)}")


async def test_repeats_recorded_through_two_nodes_at_once_are_counted_exactly(
    galera: GaleraCluster,
    node1_and_node2_servers: tuple[ServerProcess, ServerProcess],
    tmp_path: Path,
) -> None:
    """Each occurrence, and its retry, through both nodes at once: one fault, each counted once.

    Two nodes upserting the same fault conflict at certification; the loser
    runs its whole batch again, looking its occurrences up first.
    """
    instance_id = f"repeats-{uuid.uuid4()}"
    fault_ids = [str(uuid.uuid4()) for _ in range(200)]
    answers = await record_through_both(
        node1_and_node2_servers,
        [
            pb.RecordFaultRequest(
                instance_id=instance_id, message="Volume 3 is full", fault_id=fault_id
            )
            for fault_id in fault_ids
        ],
    )
    assert len({answer.fault.id for answer in answers}) == 1
    rows = galera.query(
        3,
        "SELECT occurrence_count, (SELECT COUNT(*) FROM fault_occurrences o"
        " WHERE o.fault_id = f.id) FROM instance_faults f"
        f" WHERE instance_id = '{instance_id}'",
    )
    assert [(int(str(count)), int(str(kept))) for count, kept in rows] == [(200, 200)]
    print(f"\ncertification conflicts retried: {conflicts_retried(tmp_path)}")


def conflicts_retried(logs: Path) -> int:
    """How many transactions the servers logging into `logs` ran again after a conflict."""
    text = "".join(log.read_text() for log in logs.glob("faultsvc-node*.log"))
    return len(re.findall(r"MySQL error 1213\)\); retrying", text))


def local_commits(galera: GaleraCluster, node: int) -> int:
    (row,) = galera.query(node, "SHOW GLOBAL STATUS LIKE 'wsrep_local_commits'")
    return int(str(row[1]))


def table_checksum(galera: GaleraCluster, node: int) -> tuple[int, int]:
    ((count, checksum),) = galera.query(
        node,
        "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', id, instance_id, message, details,"
        " source, host, created, updated, deleted, COALESCE(deleted_at, '')))), 0)"
        " FROM instance_faults",
    )
    return int(str(count)), int(str(checksum))


async def test_killing_the_node_in_use_loses_no_acknowledged_fault_and_it_rejoins(
    galera: GaleraCluster, tmp_path: Path
) -> None:
    server = serve(",".join(galera.url(node) for node in NODES), tmp_path / "faultsvc.log")
    try:
        load = Load([server.target], callers=16)
        health = HealthWatch(server.target)
        running = [asyncio.create_task(load.run()), asyncio.create_task(health.run())]
        try:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(galera.kill, 1)
            killed = time.monotonic()  # the script returns once the process is gone
            await asyncio.sleep(LOAD_SECONDS_AFTER_KILL)
        finally:
            load.stop.set()
            health.stop.set()
            await asyncio.gather(*running)

        # Every acknowledged fault is on both surviving nodes, each counted into its fault
        # (the load repeats one error); nothing else of the load is.
        requested = {call.fault_id for call in load.calls if call.rpc == "RecordFault"}
        for node in (2, 3):
            stored = {
                str(row[0])
                for row in galera.query(
                    node,
                    "SELECT o.id FROM fault_occurrences o JOIN instance_faults f"
                    f" ON f.id = o.fault_id WHERE f.instance_id LIKE '{load.prefix}%'",
                )
            }
            assert load.acknowledged <= stored, f"node {node} lacks acknowledged faults"
            assert stored <= requested

        failed = load.failed
        writes = [call for call in load.calls if call.rpc == "RecordFault"]
        print(
            f"\nnode 1 killed under load: {len(writes)} RecordFault calls, "
            f"{len(load.acknowledged)} acknowledged, {len(failed)} calls failed "
            f"({dict(load.codes())}); longest pause between acknowledgements "
            f"{load.longest_pause():.2f} s; the first write started after the kill acknowledged "
            f"{load.first_ok_after(killed, 'RecordFault'):.2f} s after it; "
            f"health {sorted(health.statuses_between(killed, time.monotonic()))}"
        )
        assert {call.code for call in failed} <= {grpc.StatusCode.UNAVAILABLE}
        assert load.first_ok_after(killed, "RecordFault") < 10

        # The killed node rejoins: three synced nodes holding the same rows.
        rejoin_started = time.monotonic()
        await asyncio.to_thread(galera.restart_node, 1)
        rejoined = time.monotonic() - rejoin_started
        assert galera.synced()
        checksums = {node: table_checksum(galera, node) for node in NODES}
        print(f"node 1 rejoined in {rejoined:.1f} s; rows and checksum per node: {checksums}")
        assert len(set(checksums.values())) == 1

        # The server goes back to its first endpoint: writes commit on node 1 again.
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = fault_service_pb2_grpc.FaultServiceStub(channel)
            deadline = time.monotonic() + 10
            while True:
                before = local_commits(galera, 1)
                await stub.RecordFault(pb.RecordFaultRequest(instance_id="back", message="m"))
                if local_commits(galera, 1) > before:
                    break
                assert time.monotonic() < deadline, "writes never went back to node 1"
                await asyncio.sleep(0.2)
    finally:
        server.kill()
