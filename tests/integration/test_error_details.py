"""Every error follows AIP-193: an ErrorInfo with a stable reason, RetryInfo when worth a retry."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import BadRequest, ErrorInfo, RetryInfo

from faultsvc.app import build_server
from faultsvc.config import Settings
from faultsvc.errors import ERROR_DOMAIN, FaultServiceError, FieldViolation, InvalidArgument
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.calls import Stub

STATUS_DETAILS = "grpc-status-details-bin"


def carried(trailers: Iterable[tuple[str, Any]]) -> dict[str, Message]:
    """The google.rpc details in a status's trailers, by type name."""
    rich = status_pb2.Status.FromString(dict(trailers)[STATUS_DETAILS])
    found: dict[str, Message] = {}
    for detail in rich.details:
        for kind in (ErrorInfo, BadRequest, RetryInfo):
            message = kind()
            if detail.Unpack(message):
                found[kind.DESCRIPTOR.name] = message
    return found


def every_error_class() -> Iterator[type[FaultServiceError]]:
    kinds: list[type[FaultServiceError]] = [FaultServiceError]
    while kinds:
        kind = kinds.pop()
        yield kind
        kinds += kind.__subclasses__()


def an_error_of(kind: type[FaultServiceError]) -> FaultServiceError:
    if issubclass(kind, InvalidArgument):
        return kind(FieldViolation("instance_id", "must not be empty"))
    return kind("it went wrong")


@pytest.mark.parametrize("kind", list(every_error_class()), ids=lambda kind: kind.__name__)
def test_every_error_carries_an_error_info_and_unavailable_a_retry_info(
    kind: type[FaultServiceError],
) -> None:
    error = an_error_of(kind)
    details = carried(error.status().trailing_metadata)
    info = details["ErrorInfo"]
    assert isinstance(info, ErrorInfo)
    assert (info.domain, info.reason) == (ERROR_DOMAIN, error.reason)
    assert re.fullmatch("[A-Z][A-Z0-9_]*", info.reason), "AIP-193: UPPER_SNAKE_CASE"
    if error.code == grpc.StatusCode.UNAVAILABLE:
        retry = details["RetryInfo"]
        assert isinstance(retry, RetryInfo)
        assert retry.retry_delay.ToNanoseconds() > 0
    else:
        assert "RetryInfo" not in details


async def test_an_invalid_argument_names_the_field_and_the_reason(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.RecordFault(pb.RecordFaultRequest(instance_id="", message="m"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = carried(failure.value.trailing_metadata() or ())
    assert details.keys() == {"ErrorInfo", "BadRequest"}
    info = details["ErrorInfo"]
    assert isinstance(info, ErrorInfo)
    assert info.reason == "INVALID_FIELD"


async def test_a_call_without_its_token_says_why_in_an_error_info(database_url: str) -> None:
    settings = Settings(listen="127.0.0.1:0", database_url=database_url, tokens=["a" * 32])
    server = await build_server(settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub: Stub = fault_service_pb2_grpc.FaultServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id="i"))
    finally:
        await server.stop()
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = carried(failure.value.trailing_metadata() or ())["ErrorInfo"]
    assert isinstance(info, ErrorInfo)
    assert info.reason == "INVALID_CREDENTIALS"
