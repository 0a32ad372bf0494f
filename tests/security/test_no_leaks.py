"""Admin-only values reach no one but admins: not through answers, errors or the server's log."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status
from sqlalchemy.engine import make_url

from faultsvc.convert import timestamp
from faultsvc.faults import utc_now
from faultsvc.feed import encode_resume_token
from faultsvc.v1 import fault_pb2, fault_service_pb2_grpc
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import ADMIN, Metadata, Stub, record
from tests.support.databases import mysql_admin_connection
from tests.support.rpcs import METHODS, REQUESTS, sync_answer
from tests.support.servers import ServerProcess

# The details and host of every fault these tests record: they must reach admins only.
SECRET_DETAILS = "Traceback: only-admins-may-read-this-frame"
SECRET_HOST = "db-host-only-admins-may-know-7"
TOO_LONG_ID = "i" * 65
# The request id the secret faults are recorded with, so that a search finds them.
SECRET_REQUEST = "req-5f0c6a52-secret-faults"
NOT_ADMINS: list[Metadata] = [None, (("x-roles", "member,reader"),)]
VIEWS = [pb.FAULT_VIEW_UNSPECIFIED, pb.FAULT_VIEW_BASIC, pb.FAULT_VIEW_FULL]


def failing(method: str) -> Message:
    """The RPC's request from the table, made invalid, with admin-only text where it fits."""
    request = REQUESTS[method](TOO_LONG_ID)
    if isinstance(request, pb.RecordFaultRequest):
        request.details = SECRET_DETAILS
    return request


def failing_record_requests(instance: str) -> list[pb.RecordFaultRequest]:
    """RecordFault requests that fail each of its checks, all carrying the admin-only text."""
    future = timestamp_pb2.Timestamp(seconds=4_102_444_800)  # 2100
    return [
        pb.RecordFaultRequest(instance_id="", message="m", details=SECRET_DETAILS),
        pb.RecordFaultRequest(instance_id=TOO_LONG_ID, message="m", details=SECRET_DETAILS),
        pb.RecordFaultRequest(instance_id=instance, message=" ", details=SECRET_DETAILS),
        pb.RecordFaultRequest(
            instance_id=instance, message="m", details=SECRET_DETAILS, fault_id=SECRET_DETAILS
        ),
        pb.RecordFaultRequest(
            instance_id=instance, message="m", details=SECRET_DETAILS, occur_time=future
        ),
    ]


def what_the_caller_reads(error: grpc.aio.AioRpcError) -> str:
    """The status message, the trailers, and the google.rpc details unpacked."""
    said = [error.details() or "", repr(error.trailing_metadata())]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is not None:
        said += [status.message, *(repr(detail) for detail in status.details)]
        said += [str(detail.value, errors="replace") for detail in status.details]
    return "\n".join(said)


async def fails(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


def questions(fault: fault_pb2.Fault, page_token: str) -> dict[str, list[Message]]:
    """What a caller may ask each RPC about the stored `fault`: questions answered and refused."""
    instance = fault.instance_id
    # A watch from a minute ago replays the fault's occurrences in its first response.
    replay_token = encode_resume_token(utc_now() - timedelta(minutes=1))
    an_hour_ago = timestamp(utc_now() - timedelta(hours=1))
    return {
        "RecordFault": [
            # A retry of the stored fault's report: the stored fault is the answer.
            pb.RecordFaultRequest(instance_id=instance, message=fault.message, fault_id=fault.id),
            # Its id for another instance: ALREADY_EXISTS.
            pb.RecordFaultRequest(instance_id="another", message="m", fault_id=fault.id),
        ],
        "GetLatestFault": [
            pb.GetLatestFaultRequest(instance_id=instance, view=view) for view in VIEWS
        ],
        "BatchGetLatestFaults": [
            *(pb.BatchGetLatestFaultsRequest(instance_ids=[instance], view=view) for view in VIEWS),
            pb.BatchGetLatestFaultsRequest(
                instance_ids=[instance, TOO_LONG_ID], view=pb.FAULT_VIEW_FULL
            ),
        ],
        "ListFaults": [
            *(pb.ListFaultsRequest(instance_id=instance, view=view) for view in VIEWS),
            pb.ListFaultsRequest(
                instance_id=instance, page_token=page_token, view=pb.FAULT_VIEW_FULL
            ),
            pb.ListFaultsRequest(instance_id="another", page_token=page_token),
        ],
        "ClearFaults": [
            pb.ClearFaultsRequest(instance_id=TOO_LONG_ID),
            pb.ClearFaultsRequest(instance_id=instance),
        ],
        "SearchFaults": [
            *(
                pb.SearchFaultsRequest(filter=f'request_id = "{SECRET_REQUEST}"', view=view)
                for view in VIEWS
            ),
            pb.SearchFaultsRequest(filter=f'request_id = "{SECRET_REQUEST}" AND host = "x"'),
            pb.SearchFaultsRequest(filter=f'host = "{SECRET_HOST}"'),
        ],
        "WatchFaults": [
            *(
                pb.WatchFaultsRequest(
                    filter=f'instance_id = "{instance}"', resume_token=replay_token, view=view
                )
                for view in VIEWS
            ),
            # Comparing the host would tell it by what arrives: refused to those who may not.
            pb.WatchFaultsRequest(
                filter=f'instance_id = "{instance}" AND host = "{SECRET_HOST}"',
                resume_token=replay_token,
            ),
        ],
        "RankFaults": [
            pb.RankFaultsRequest(
                filter=f'instance_id = "{instance}"', start_time=an_hour_ago, view=view
            )
            for view in VIEWS
        ],
    }


async def store_secret_faults(stub: Stub) -> tuple[fault_pb2.Fault, str]:
    """Two faults of a new instance, details and host secret: the second, and a page token."""
    instance = str(uuid.uuid4())
    for message in ("first", "second"):
        fault = await record(
            stub,
            instance,
            message,
            details=SECRET_DETAILS,
            host=SECRET_HOST,
            fault_id=str(uuid.uuid4()),
            request_id=SECRET_REQUEST,
        )
    first_page = await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance, page_size=1))
    return fault, first_page.next_page_token


async def everything_read(call: Any) -> str:
    """All a caller reads of a call: the response or the error, and the metadata.

    Of a stream, its first response: then it is cancelled.
    """
    try:
        response: Any
        if isinstance(call, grpc.aio.UnaryStreamCall):
            response = await call.read()
            call.cancel()
        else:
            response = await call
        said = [str(response), response.SerializeToString().decode(errors="replace")]
    except grpc.aio.AioRpcError as error:
        said = [what_the_caller_reads(error)]
    said += [repr(await call.initial_metadata()), repr(await call.trailing_metadata())]
    return "\n".join(said)


@pytest.mark.parametrize("method", METHODS)
async def test_no_answer_to_a_non_admin_carries_a_stored_admin_only_value(
    stub: Stub, method: str
) -> None:
    fault, page_token = await store_secret_faults(stub)
    asked = questions(fault, page_token)
    assert set(asked) == set(METHODS)
    rpc = getattr(stub, method)
    admin_read = [await everything_read(rpc(q, metadata=ADMIN, timeout=10)) for q in asked[method]]
    if method != "ClearFaults":  # whose answer is a count, whoever asks
        # The questions reach the secrets: the checks below could see them.
        assert SECRET_DETAILS in "".join(admin_read)
        assert SECRET_HOST in "".join(admin_read)
    for metadata in NOT_ADMINS:
        for question in asked[method]:
            read = await everything_read(rpc(question, metadata=metadata, timeout=10))
            assert SECRET_DETAILS not in read, (metadata, question)
            assert SECRET_HOST not in read, (metadata, question)


async def test_no_record_fault_refusal_carries_the_details(stub: Stub) -> None:
    instance = str(uuid.uuid4())
    errors = [
        await fails(stub.RecordFault(request, timeout=10))
        for request in failing_record_requests(instance)
    ]
    fault_id = str(uuid.uuid4())
    await stub.RecordFault(
        pb.RecordFaultRequest(
            instance_id=instance, message="m", details=SECRET_DETAILS, fault_id=fault_id
        )
    )
    taken = pb.RecordFaultRequest(
        instance_id="another", message="m", details=SECRET_DETAILS, fault_id=fault_id
    )
    errors.append(await fails(stub.RecordFault(taken, timeout=10)))
    assert [error.code() for error in errors] == [grpc.StatusCode.INVALID_ARGUMENT] * 5 + [
        grpc.StatusCode.ALREADY_EXISTS
    ]
    for error in errors:
        assert SECRET_DETAILS not in what_the_caller_reads(error)


async def test_a_request_that_does_not_parse_is_not_quoted(server: Any) -> None:
    """The bytes of a request with a broken field hold the details too: none come back."""
    request = pb.RecordFaultRequest(instance_id="i", message="MESSAGE", details=SECRET_DETAILS)
    data = request.SerializeToString().replace(b"MESSAGE", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9")
    async with grpc.aio.insecure_channel(server.target) as channel:
        record_bytes: Any = channel.unary_unary("/faultsvc.v1.FaultService/RecordFault")
        error = await fails(record_bytes(data, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message" in (error.details() or "")
    assert SECRET_DETAILS not in what_the_caller_reads(error)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_the_server_log_never_holds_fault_details(
    database_url: str, tmp_path: Path, level: str
) -> None:
    log = tmp_path / "faultsvc.log"
    server = ServerProcess(database_url, extra_args=["--log-level", level], log_path=log)
    instance = str(uuid.uuid4())
    with server, grpc.insecure_channel(server.target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        admin = (("x-roles", "admin"),)
        for _ in range(3):
            stub.RecordFault(
                pb.RecordFaultRequest(instance_id=instance, message="m", details=SECRET_DETAILS)
            )
        for method in METHODS:
            sync_answer(stub, method, REQUESTS[method](instance), metadata=admin, timeout=10)
            with pytest.raises(grpc.RpcError):
                sync_answer(stub, method, failing(method), metadata=admin, timeout=10)
        for request in failing_record_requests(instance):
            with pytest.raises(grpc.RpcError):
                stub.RecordFault(request, timeout=10)
        server.stop()
    logged = log.read_text()
    assert "serving on" in logged
    assert SECRET_DETAILS not in logged


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
def test_an_unexpected_database_error_is_logged_without_the_details(
    database_url: str, tmp_path: Path
) -> None:
    """The traceback of an error no one foresaw is logged; the statement's values are not."""
    log = tmp_path / "faultsvc.log"
    with ServerProcess(database_url, log_path=log) as server:
        # A column too narrow for the details: an error the store does not expect.
        connection = mysql_admin_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"ALTER TABLE {make_url(database_url).database}.instance_faults "
                    "MODIFY details VARCHAR(8)"
                )
        finally:
            connection.close()
        with grpc.insecure_channel(server.target) as channel:
            stub = fault_service_pb2_grpc.FaultServiceStub(channel)
            request = pb.RecordFaultRequest(instance_id="i", message="m", details=SECRET_DETAILS)
            with pytest.raises(grpc.RpcError) as failure:
                stub.RecordFault(request, timeout=10)
        assert failure.value.code() == grpc.StatusCode.INTERNAL
        server.stop()
    logged = log.read_text()
    assert "Traceback" in logged
    assert SECRET_DETAILS not in logged
