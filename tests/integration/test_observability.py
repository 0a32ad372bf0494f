"""What operators watch: Prometheus metrics, JSON logs, and workers sharing one port."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.metrics import scrape
from tests.support.servers import ServerProcess, free_port


def make_calls(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        for n in range(5):
            stub.RecordFault(
                pb.RecordFaultRequest(instance_id=f"i-{n}", message="m", source="taskmanager")
            )
        stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id="i-1"))
        with pytest.raises(grpc.RpcError):
            stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=""))


def check_metrics(port: int) -> None:
    """The metrics of make_calls, once the last call is counted.

    A call is counted after its answer is sent: the scrape right after the
    client saw the answer may come before the count.
    """
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(port)
        invalid = (("code", "INVALID_ARGUMENT"), ("method", "GetLatestFault"))
        if ("faultsvc_rpc_requests_total", invalid) in samples or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (
        samples[("faultsvc_rpc_requests_total", (("code", "OK"), ("method", "RecordFault")))] == 5
    )
    assert (
        samples[("faultsvc_rpc_requests_total", (("code", "OK"), ("method", "GetLatestFault")))]
        == 1
    )
    invalid = (("code", "INVALID_ARGUMENT"), ("method", "GetLatestFault"))
    assert samples[("faultsvc_rpc_requests_total", invalid)] == 1
    assert samples[("faultsvc_rpc_duration_seconds_count", (("method", "RecordFault"),))] == 5
    assert samples[("faultsvc_faults_recorded_total", (("source", "taskmanager"),))] == 5
    writes = (("batcher", "group-commit"),)
    assert 1 <= samples[("faultsvc_batch_size_count", writes)] <= 5
    assert samples[("faultsvc_batch_size_sum", writes)] == 5
    assert samples[("faultsvc_batch_size_sum", (("batcher", "coalesced-reads"),))] == 1
    assert ("faultsvc_database_connections_in_use", ()) in samples


def test_metrics_count_rpcs_by_code_and_batches(database_url: str) -> None:
    metrics_port = free_port()
    with ServerProcess(
        database_url, extra_args=["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    ) as server:
        make_calls(server.target)
        check_metrics(metrics_port)


def test_two_workers_share_one_port_and_sum_their_metrics(tmp_path: Path) -> None:
    metrics_port = free_port()
    server = ServerProcess(
        f"sqlite+aiosqlite:///{tmp_path / 'f.db'}",
        extra_args=["--workers", "2", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
    )
    with server:
        listening = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{server.port}"], capture_output=True, text=True, check=True
        ).stdout
        assert len(set(_pids(listening))) == 2, listening
        make_calls(server.target)
        check_metrics(metrics_port)
        assert server.stop() == 0


def _pids(ss_output: str) -> list[str]:
    return [part.split(",")[0] for part in ss_output.split("pid=")[1:]]


def test_json_logs_are_one_object_per_line_without_details(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    server = ServerProcess(
        f"sqlite+aiosqlite:///{tmp_path / 'f.db'}",
        extra_args=["--log-format", "json", "--log-level", "debug"],
        log_path=log_path,
    )
    with server, grpc.insecure_channel(server.target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        stub.RecordFault(
            pb.RecordFaultRequest(instance_id="i", message="m", details="SECRET-STACK-FRAME")
        )
        server.stop()
    lines = log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert any("serving on" in event["message"] for event in events)
    assert all({"time", "level", "logger", "message"} <= event.keys() for event in events)
    assert "SECRET-STACK-FRAME" not in log_path.read_text()
