"""The one exception the client raises for a failed call."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.rpc import error_details_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldViolation:
    """One `google.rpc.BadRequest.FieldViolation`: which request field was wrong, and why."""

    field: str
    description: str
    reason: str = ""


class FaultServiceError(Exception):
    """A call to faultsvc failed.

    `code` is the gRPC status code, `details` the server's message, and
    `field_violations` the `google.rpc.BadRequest` violations naming the
    offending request fields (empty when the status carries none).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        field_violations: Sequence[FieldViolation] = (),
        reason: str = "",
        error_metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        # The google.rpc.ErrorInfo's reason (e.g. WATCHER_TOO_SLOW) and metadata
        # (e.g. the resume_token to watch again from), when the status carries one.
        self.reason = reason
        self.error_metadata: dict[str, str] = dict(error_metadata or {})

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> FaultServiceError:
        status = rich_status_of(error)
        info = error_info_of(status)
        return cls(
            error.code(),
            error.details() or "",
            field_violations_of(error),
            reason=info.reason if info is not None else "",
            error_metadata=dict(info.metadata) if info is not None else None,
        )

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.details}"
        # Servers often say the same in their message; say it once.
        unsaid = [
            f"{v.field}: {v.description}"
            for v in self.field_violations
            if f"{v.field}: {v.description}" not in self.details
        ]
        return f"{text} ({'; '.join(unsaid)})" if unsaid else text


def field_violations_of(error: grpc.aio.AioRpcError) -> tuple[FieldViolation, ...]:
    """The BadRequest field violations carried in the error's rich status."""
    status = rich_status_of(error)
    if status is None:
        return ()
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(v.field, v.description, v.reason)
                for v in bad_request.field_violations
            )
    return tuple(violations)


def error_info_of(status: Any) -> Any:
    """The `google.rpc.ErrorInfo` of a rich status, or None."""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def rich_status_of(error: grpc.aio.AioRpcError) -> Any:
    """The `google.rpc.Status` in the error's trailers, or None."""
    try:
        # from_call reads only code(), details() and trailing_metadata(),
        # which an AioRpcError has.
        return rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        # The trailer disagrees with the call's own code or message: a broken
        # proxy, not something to fail the caller over.
        LOG.debug("ignoring an inconsistent grpc-status-details-bin trailer", exc_info=True)
        return None
