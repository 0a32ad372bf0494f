"""Domain errors, and the one mapping from them to gRPC statuses."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """A request field that is wrong, and why."""

    field: str
    description: str


class FaultServiceError(Exception):
    """An error a caller can cause or must know about; carries its gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def status(self) -> grpc.Status:
        return rpc_status.to_status(status_pb2.Status(code=self.code.value[0], message=str(self)))


class InvalidArgument(FaultServiceError):
    """One or more request fields are invalid; answered with a google.rpc.BadRequest."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, *violations: FieldViolation) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(FieldViolation(field, description))

    def status(self) -> grpc.Status:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(self), details=[detail])
        )


class MalformedRequest(FaultServiceError):
    """The request's bytes are not the message its RPC takes, and no one field is at fault."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ResponseTooLarge(FaultServiceError):
    """The answer would not fit the response budget; the message says what to ask instead."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(FaultServiceError):
    """The call carries no valid credentials; the message never quotes what it carried."""

    code = grpc.StatusCode.UNAUTHENTICATED


class AlreadyExists(FaultServiceError):
    """A caller-made id is taken by a different fault."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Unavailable(FaultServiceError):
    """The database does not answer, or the server sheds load; the caller should retry.

    With `retry_after_seconds`, the status carries a google.rpc.RetryInfo saying
    how long to wait first.
    """

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def status(self) -> grpc.Status:
        if self.retry_after_seconds is None:
            return super().status()
        retry_info = error_details_pb2.RetryInfo()
        retry_info.retry_delay.FromNanoseconds(int(self.retry_after_seconds * 1e9))
        detail = any_pb2.Any()
        detail.Pack(retry_info)
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(self), details=[detail])
        )


class Overloaded(Unavailable):
    """Too many calls already wait for the database: turned away at once, before any work."""
