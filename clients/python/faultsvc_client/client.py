"""A typed async client for faultsvc.

A thin layer over the generated stub: it adds the caller's credentials and
roles to every call, a deadline, gRPC's own retries of UNAVAILABLE, and
turns every failed call into one exception type, `FaultServiceError`.

    async with FaultServiceClient.connect("127.0.0.1:50051", token=token) as client:
        fault = await client.get_latest_fault(instance_id, roles=["admin"], timeout=0.2)

Roles, token and deadline are the client's own unless a call gives its own
(`CallOptions`): one API process serves admins and tenants call after call.

Create the client inside a running event loop: gRPC binds an aio channel to
the loop it is created on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeAlias, TypedDict, TypeVar, Unpack

import grpc
from google.protobuf import timestamp_pb2

from faultsvc.v1 import fault_pb2, fault_service_pb2, fault_service_pb2_grpc
from faultsvc_client.errors import FaultServiceError
from faultsvc_client.request_ids import NO_REQUEST_IDS, RequestIds

if TYPE_CHECKING:
    from faultsvc.v1.fault_service_pb2_grpc import FaultServiceAsyncStub

SERVICE_NAME = fault_service_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name
DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


# How much of each fault a read returns (AIP-157): FaultView.FAULT_VIEW_BASIC
# leaves details out, FAULT_VIEW_FULL includes them for admins.
FaultView = fault_service_pb2.FaultView
View: TypeAlias = fault_service_pb2.FaultView.ValueType
UNSPECIFIED = fault_service_pb2.FAULT_VIEW_UNSPECIFIED


class CallOptions(TypedDict, total=False):
    """What one call may set for itself; whatever it leaves out is the client's own.

    `roles`: the caller's roles (keystone-style; an admin role sees the
    admin-only fields); `token`: the bearer token; `timeout`: the call's
    deadline in seconds (None: no deadline).
    """

    roles: Sequence[str]
    token: str | None
    timeout: float | None


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's transparent retries of calls that fail with UNAVAILABLE.

    gRPC caps `max_attempts` at 5. Retried RecordFault calls are safe because
    the client always sends a `fault_id`.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    backoff_multiplier: float = 2.0

    def service_config(self) -> str:
        """The channel's service config (gRPC's JSON form) applying this policy."""
        return json.dumps(
            {
                "methodConfig": [
                    {
                        "name": [{"service": SERVICE_NAME}],
                        "retryPolicy": {
                            "maxAttempts": self.max_attempts,
                            "initialBackoff": f"{self.initial_backoff:.3f}s",
                            "maxBackoff": f"{self.max_backoff:.3f}s",
                            "backoffMultiplier": self.backoff_multiplier,
                            "retryableStatusCodes": ["UNAVAILABLE"],
                        },
                    }
                ]
            }
        )


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the channel; with a client certificate and key, mutual TLS."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    # The name to verify the server's certificate against, when it differs
    # from the target's host (e.g. a certificate made for a service name).
    server_name: str | None = None

    @classmethod
    def from_files(
        cls,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        server_name: str | None = None,
    ) -> TlsConfig:
        return cls(
            root_certificates=_read(ca_file),
            certificate_chain=_read(cert_file),
            private_key=_read(key_file),
            server_name=server_name,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def request_id_filter(request_id: str | None = None, global_request_id: str | None = None) -> str:
    """The SearchFaults filter for the given request ids, their quotes and backslashes escaped."""
    if not (request_id or global_request_id):
        raise ValueError("give a request id, a global request id, or both")
    return fleet_filter(request_id=request_id, global_request_id=global_request_id)


def fleet_filter(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    **fields: str | None,
) -> str:
    """The filter (AIP-160) of SearchFaults, WatchFaults or RankFaults for these comparisons.

    `fields` are compared with `=` (instance_id, source, host, fingerprint,
    request_id, global_request_id; None or empty: not compared); `since` and
    `until` (aware datetimes) bound the faults' latest occurrence, `since`
    included. Values are quoted, their quotes and backslashes escaped.
    """
    comparisons = [f"{field} = {_quoted(value)}" for field, value in fields.items() if value]
    if since is not None:
        comparisons.append(f'last_occur_time >= "{_rfc3339(since)}"')
    if until is not None:
        comparisons.append(f'last_occur_time < "{_rfc3339(until)}"')
    return " AND ".join(comparisons)


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("give an aware datetime: a time without a zone is ambiguous")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def call_metadata(token: str | None, roles: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """The metadata faultsvc reads: a bearer token and keystone-style roles.

    gRPC metadata carries printable ASCII only; anything else in a token or
    a role is an INVALID_ARGUMENT `FaultServiceError` here, before the call.
    """
    metadata: list[tuple[str, str]] = []
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    role_list = [role.strip() for role in roles if role.strip()]
    if role_list:
        metadata.append(("x-roles", ",".join(role_list)))
    for key, value in metadata:
        if not (value.isascii() and value.isprintable()):
            # Not quoted: the value may be a credential.
            what = "the token" if key == "authorization" else "a role"
            raise FaultServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{what} holds characters gRPC metadata cannot carry (only printable ASCII)",
            )
    return tuple(metadata)


def channel_options(
    retry: RetryPolicy | None, max_reconnect_backoff: float, tls: TlsConfig | None
) -> list[tuple[str, str | int]]:
    options: list[tuple[str, str | int]] = [
        # gRPC's default reconnect backoff grows to two minutes; a reporter that
        # buffered through an outage should deliver within seconds of the
        # server coming back.
        ("grpc.max_reconnect_backoff_ms", int(max_reconnect_backoff * 1000)),
    ]
    if retry is not None:
        options.append(("grpc.enable_retries", 1))
        options.append(("grpc.service_config", retry.service_config()))
    else:
        options.append(("grpc.enable_retries", 0))
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


# Interruptions a watch resumes from: the server stops or its database does not answer
# (UNAVAILABLE), or the watcher fell behind (RESOURCE_EXHAUSTED).
RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


class RecentIds:
    """The ids of the occurrences seen lately, to drop what a resumed watch streams again.

    A resumed watch replays at most the server's overlap (30 s by default)
    before its token; ids are kept for `keep` after the newest recording
    time seen, and at most `limit` of them.
    """

    def __init__(self, keep: timedelta = timedelta(minutes=10), limit: int = 100_000) -> None:
        self._keep = keep
        self._limit = limit
        self._seen: dict[str, datetime] = {}
        self._newest = datetime.min

    def add(self, occurrence_id: str, recorded: datetime) -> bool:
        """Whether the id is new; it is remembered."""
        if occurrence_id in self._seen:
            return False
        self._seen[occurrence_id] = recorded
        if recorded > self._newest:
            self._newest = recorded
        if len(self._seen) > self._limit:
            self._forget()
        return True

    def _forget(self) -> None:
        horizon = self._newest - self._keep
        self._seen = {i: t for i, t in self._seen.items() if t >= horizon}
        while len(self._seen) > self._limit:  # insertion order: the oldest first
            del self._seen[next(iter(self._seen))]


def timestamp_of(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class FaultServiceClient:
    """Calls FaultService; every failed call raises `FaultServiceError`.

    Takes an existing aio channel (the client closes it on `close()`); build
    one from a target with `connect()`.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        token: str | None = None,
        roles: Sequence[str] = (),
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._channel = channel
        self._stub: FaultServiceAsyncStub = fault_service_pb2_grpc.FaultServiceStub(channel)
        self._token = token
        self._roles = tuple(roles)
        self._timeout = timeout

    @classmethod
    def connect(
        cls,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        roles: Sequence[str] = (),
        tls: TlsConfig | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        max_reconnect_backoff: float = 5.0,
    ) -> Self:
        """A client on a new channel to `target` (HOST:PORT).

        `token`, `roles` and `timeout` (the deadline of each call in seconds;
        None: no deadline) hold for every call that does not give its own;
        `retry` is gRPC's retry of UNAVAILABLE (None: no retries). The channel
        connects lazily, on the first call.
        """
        options = channel_options(retry, max_reconnect_backoff, tls)
        if tls is None:
            channel = grpc.aio.insecure_channel(target, options=options)
        else:
            channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
        return cls(channel, token=token, roles=roles, timeout=timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def record_fault(
        self,
        instance_id: str,
        message: str,
        *,
        details: str = "",
        source: str = "",
        host: str = "",
        fault_id: str | None = None,
        occur_time: datetime | None = None,
        request_ids: RequestIds = NO_REQUEST_IDS,
        fingerprint: str = "",
        **options: Unpack[CallOptions],
    ) -> fault_pb2.Fault:
        """Records a fault and returns it as stored: a repeat, the fault it counts into.

        Without `fault_id` the client makes one, so gRPC's retries of the call
        never record it twice. `occur_time` (an aware datetime) is when the
        error happened; unset, the server's time of receipt. `request_ids`
        lead from the fault to its logs; sent as given, the server checks them.
        `fingerprint`, the caller's own, decides which faults are repeats of
        one another; unset, the server's rule does.
        """
        request = fault_service_pb2.RecordFaultRequest(
            instance_id=instance_id,
            message=message,
            details=details,
            source=source,
            host=host,
            fault_id=fault_id or str(uuid.uuid4()),
            request_id=request_ids.request_id,
            global_request_id=request_ids.global_request_id,
            trace_id=request_ids.trace_id,
            fingerprint=fingerprint,
        )
        if occur_time is not None:
            request.occur_time.CopyFrom(timestamp_of(occur_time))
        response = await self._call(self._stub.RecordFault, request, options)
        return response.fault

    async def get_latest_fault(
        self, instance_id: str, *, view: View = UNSPECIFIED, **options: Unpack[CallOptions]
    ) -> fault_pb2.Fault | None:
        """The instance's newest fault, or None when it has none; FULL view unless told."""
        request = fault_service_pb2.GetLatestFaultRequest(instance_id=instance_id, view=view)
        response = await self._call(self._stub.GetLatestFault, request, options)
        return response.fault if response.HasField("fault") else None

    async def batch_get_latest_faults(
        self,
        instance_ids: Iterable[str],
        *,
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> list[fault_pb2.Fault]:
        """The latest fault of each given instance that has one (at most 1,000 ids).

        BASIC view (no details) unless told: what a list view shows.
        """
        request = fault_service_pb2.BatchGetLatestFaultsRequest(
            instance_ids=list(instance_ids), view=view
        )
        response = await self._call(self._stub.BatchGetLatestFaults, request, options)
        return list(response.faults)

    async def list_faults(
        self,
        instance_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> fault_service_pb2.ListFaultsResponse:
        """One page of the instance's faults, newest first, and the next page's token.

        FULL view unless told. A page may hold fewer than `page_size` faults
        when more would not fit the server's response budget.
        """
        request = fault_service_pb2.ListFaultsRequest(
            instance_id=instance_id, page_size=page_size, page_token=page_token, view=view
        )
        return await self._call(self._stub.ListFaults, request, options)

    async def iter_faults(
        self,
        instance_id: str,
        *,
        page_size: int = 0,
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[fault_pb2.Fault]:
        """Every fault of the instance, newest first, fetched a page at a time.

        `timeout` is the deadline of each page's call.
        """
        page_token = ""
        while True:
            page = await self.list_faults(
                instance_id, page_size=page_size, page_token=page_token, view=view, **options
            )
            for fault in page.faults:
                yield fault
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def search_faults(
        self,
        filter_: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> fault_service_pb2.SearchFaultsResponse:
        """One page of the faults of any instance, or of those that match `filter_`, the one
        that occurred last first (admins).

        `filter_` (AIP-160) compares `instance_id`, `source`, `host`,
        `fingerprint`, `request_id` and `global_request_id` with `=`, and
        `last_occur_time` with `<`, `<=`, `>`, `>=`, joined by AND: see
        `fleet_filter` and `request_id_filter`.
        """
        request = fault_service_pb2.SearchFaultsRequest(
            filter=filter_, page_size=page_size, page_token=page_token, view=view
        )
        return await self._call(self._stub.SearchFaults, request, options)

    async def watch_faults(
        self,
        filter_: str = "",
        *,
        resume_token: str = "",
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> AsyncGenerator[fault_service_pb2.WatchFaultsResponse, None]:
        """The responses of WatchFaults: occurrences as they are recorded, from now or a token.

        The first response comes at once, with no occurrence and a resume
        token. The watch has no deadline unless `timeout` is given. A failed
        watch raises `FaultServiceError`; its `error_metadata` may hold the
        `resume_token` to watch again from (see `follow_faults`, which does).
        """
        request = fault_service_pb2.WatchFaultsRequest(
            filter=filter_, resume_token=resume_token, view=view
        )
        metadata = call_metadata(
            options.get("token", self._token), options.get("roles", self._roles)
        )
        call = self._stub.WatchFaults(request, metadata=metadata, timeout=options.get("timeout"))
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            raise FaultServiceError.from_rpc_error(error) from error
        finally:
            call.cancel()

    async def follow_faults(
        self,
        filter_: str = "",
        *,
        resume_token: str = "",
        view: View = UNSPECIFIED,
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_interruption: Callable[[FaultServiceError], None] | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        **options: Unpack[CallOptions],
    ) -> AsyncGenerator[fault_pb2.FaultOccurrence, None]:
        """Every occurrence recorded from now (or from `resume_token`) on, once, for ever.

        `on_start` is awaited once the server follows the watch: whatever is
        recorded from then on will be streamed (to show what came before,
        without a gap). A watch that is interrupted (the server stops or its
        database does not answer: UNAVAILABLE; the watcher fell behind:
        RESOURCE_EXHAUSTED) is resumed from its last token after a pause that
        doubles from `backoff[0]` to `backoff[1]` seconds; `on_interruption` is
        told each time. The occurrences a resumed watch streams again are
        dropped by id. Any other failure raises `FaultServiceError`, and so
        does one before the first watch started (faultsvc cannot be reached):
        OUT_OF_RANGE when the token is older than the server replays.
        """
        recent = RecentIds()
        pause = backoff[0]
        followed = False
        while True:
            try:
                async for response in self.watch_faults(
                    filter_, resume_token=resume_token, view=view, **options
                ):
                    followed = True
                    if on_start is not None:
                        await on_start()
                        on_start = None
                    for occurrence in response.occurrences:
                        if recent.add(occurrence.id, occurrence.record_time.ToDatetime()):
                            yield occurrence
                    resume_token = response.resume_token
                    pause = backoff[0]
            except FaultServiceError as error:
                # A first watch that never started is a failure to report, not to wait out.
                if error.code not in RESUMABLE or not followed:
                    raise
                if on_interruption is not None:
                    on_interruption(error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, backoff[1])

    async def rank_faults(
        self,
        filter_: str = "",
        *,
        start_time: datetime,
        end_time: datetime | None = None,
        interval_count: int = 0,
        max_faults: int = 0,
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> fault_service_pb2.RankFaultsResponse:
        """The faults that occurred most between `start_time` and `end_time` (default: now),
        most first, each with its count in every interval of the window (admins).

        `interval_count` (default 12) cuts the window; `max_faults` (default
        10, at most 100) bounds the ranking; `filter_` compares `instance_id`,
        `source`, `host` and `fingerprint`.
        """
        request = fault_service_pb2.RankFaultsRequest(
            filter=filter_,
            start_time=timestamp_of(start_time),
            interval_count=interval_count,
            max_faults=max_faults,
            view=view,
        )
        if end_time is not None:
            request.end_time.CopyFrom(timestamp_of(end_time))
        return await self._call(self._stub.RankFaults, request, options)

    async def clear_faults(self, instance_id: str, **options: Unpack[CallOptions]) -> int:
        """Clears the instance's faults; returns how many were cleared."""
        request = fault_service_pb2.ClearFaultsRequest(instance_id=instance_id)
        response = await self._call(self._stub.ClearFaults, request, options)
        return response.cleared_count

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        options: CallOptions,
    ) -> _Response:
        metadata = call_metadata(
            options.get("token", self._token), options.get("roles", self._roles)
        )
        try:
            return await method(
                request, metadata=metadata, timeout=options.get("timeout", self._timeout)
            )
        except grpc.aio.AioRpcError as error:
            raise FaultServiceError.from_rpc_error(error) from error
