"""Domain errors, and the one mapping from them to gRPC statuses.

Every status follows AIP-193: it carries a `google.rpc.ErrorInfo` (a reason
that programs may branch on, in the `faultsvc` domain), the details that help
(a `google.rpc.BadRequest` naming the fields), and, when the caller should try
again later, a `google.rpc.RetryInfo`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "faultsvc"
# What an UNAVAILABLE asks callers to wait before retrying, unless its error says otherwise.
RETRY_DELAY_SECONDS = 1.0


@dataclass(frozen=True)
class FieldViolation:
    """A request field that is wrong, and why."""

    field: str
    description: str


class FaultServiceError(Exception):
    """An error a caller can cause or must know about; carries its gRPC status code.

    `reason` is the ErrorInfo reason (AIP-193: UPPER_SNAKE_CASE, stable, for
    programs). `retry_after_seconds` is the RetryInfo hint; every UNAVAILABLE
    carries one.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL_ERROR"
    retry_after_seconds: float | None = None

    def details(self) -> Sequence[Message]:
        """The google.rpc details beside ErrorInfo and RetryInfo; none by default."""
        return ()

    def error_metadata(self) -> Mapping[str, str]:
        """What the ErrorInfo carries beside its reason (AIP-193 `metadata`); none by default."""
        return {}

    def status(self) -> grpc.Status:
        return error_status(
            self.code,
            str(self),
            self.reason,
            self.details(),
            retry_after_seconds=self.retry_after_seconds,
            metadata=self.error_metadata(),
        )


def error_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    details: Sequence[Message] = (),
    *,
    retry_after_seconds: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> grpc.Status:
    """A status with an ErrorInfo, `details`, and a RetryInfo when it should be retried."""
    if retry_after_seconds is None and code == grpc.StatusCode.UNAVAILABLE:
        retry_after_seconds = RETRY_DELAY_SECONDS
    carried = [
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {}),
        *details,
    ]
    if retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(retry_after_seconds * 1e9))
        carried.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in carried:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=packed)
    )


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> NoReturn:
    """Ends the call with `status`.

    Through `context.abort`, which a wrapper of the context (OpenTelemetry's,
    recording the code on the RPC's span) sees; `abort_with_status` bypasses it.
    """
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # it always raises


class InvalidArgument(FaultServiceError):
    """One or more request fields are invalid; answered with a google.rpc.BadRequest."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_FIELD"

    def __init__(self, *violations: FieldViolation) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(FieldViolation(field, description))

    def details(self) -> Sequence[Message]:
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
        ]


class MalformedRequest(FaultServiceError):
    """The request's bytes are not the message its RPC takes, and no one field is at fault."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "MALFORMED_REQUEST"


class ResponseTooLarge(FaultServiceError):
    """The answer would not fit the response budget; the message says what to ask instead."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESPONSE_TOO_LARGE"


class Unauthenticated(FaultServiceError):
    """The call carries no valid credentials; the message never quotes what it carried."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "INVALID_CREDENTIALS"


class PermissionDenied(FaultServiceError):
    """The caller is known, but not allowed what it asked for."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "ADMIN_ONLY"


class AlreadyExists(FaultServiceError):
    """A caller-made id is taken by a different fault."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "FAULT_ID_TAKEN"


class Unavailable(FaultServiceError):
    """The database does not answer, or the server sheds load; the caller should retry.

    The status's google.rpc.RetryInfo says how long to wait first:
    `retry_after_seconds`, or RETRY_DELAY_SECONDS when not given.
    """

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DATABASE_UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Overloaded(Unavailable):
    """Too many calls already wait for the database: turned away at once, before any work."""

    reason = "OVERLOADED"


class WatchEnded(FaultServiceError):
    """A watch the server ends; the ErrorInfo's `resume_token` is where to resume it from."""

    def __init__(self, message: str, resume_token: str = "") -> None:
        super().__init__(f"{message}; resume from the last resume_token")
        self.resume_token = resume_token

    def error_metadata(self) -> Mapping[str, str]:
        return {"resume_token": self.resume_token} if self.resume_token else {}


class WatcherTooSlow(WatchEnded):
    """A watcher read more slowly than occurrences were recorded, and its queue filled up."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "WATCHER_TOO_SLOW"


class WatchInterrupted(WatchEnded):
    """The server stops, or the database does not answer: watch again, from the token."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "WATCH_INTERRUPTED"


class TooManyWatchers(FaultServiceError):
    """The process follows as many watchers as it may; another one is turned away."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_WATCHERS"


class ResumeTokenExpired(FaultServiceError):
    """A resume token older than the replay window: what came after it is not replayed."""

    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "RESUME_TOKEN_EXPIRED"
