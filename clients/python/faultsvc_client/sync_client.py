"""The faultsvc client for synchronous code: WSGI APIs, threads, eventlet's green threads.

    client = SyncFaultServiceClient.connect("faultsvc.example:50051", token=token)
    fault = client.get_latest_fault(instance_id, roles=["admin"], timeout=0.2)
    client.close()

It has the methods of `FaultServiceClient`, which it runs on an event loop
of its own thread. One client serves every thread of a process at once, and
every green thread under eventlet's monkey patching: a caller waits without
holding up the others. Make it in the process that uses it (after a WSGI
server forks its workers): its thread does not survive a fork.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import grpc

from faultsvc.v1 import fault_pb2, fault_service_pb2
from faultsvc_client.client import (
    DEFAULT_RETRY,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    UNSPECIFIED,
    CallOptions,
    FaultServiceClient,
    RetryPolicy,
    TlsConfig,
    View,
)
from faultsvc_client.errors import FaultServiceError
from faultsvc_client.loop_thread import LOOP_GRACE, LoopThread, start_loop_thread
from faultsvc_client.request_ids import NO_REQUEST_IDS, RequestIds

_T = TypeVar("_T")


class SyncFaultServiceClient:
    """Calls FaultService from synchronous code; every failed call raises `FaultServiceError`.

    Build it with `connect()`; `close()` (or leaving a `with` block) ends its
    channel and thread.
    """

    def __init__(
        self, loop_thread: LoopThread, client: FaultServiceClient, timeout: float | None
    ) -> None:
        self._loop_thread = loop_thread
        self._client = client
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
        """A client of `target` (HOST:PORT), as `FaultServiceClient.connect` makes one."""

        async def connect_on_loop() -> FaultServiceClient:
            return FaultServiceClient.connect(
                target,
                token=token,
                roles=roles,
                tls=tls,
                timeout=timeout,
                retry=retry,
                max_reconnect_backoff=max_reconnect_backoff,
            )

        loop_thread, client = start_loop_thread("faultsvc-client", connect_on_loop())
        return cls(loop_thread, client, timeout)

    def close(self) -> None:
        """Closes the channel, cancelling calls in flight, and ends the client's thread."""
        if not self._loop_thread.loop.is_closed():
            self._loop_thread.finish(self._client.close(), timeout=LOOP_GRACE)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def record_fault(
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
        """Records a fault and returns it as stored (see `FaultServiceClient.record_fault`)."""
        recording = self._client.record_fault(
            instance_id,
            message,
            details=details,
            source=source,
            host=host,
            fault_id=fault_id,
            occur_time=occur_time,
            request_ids=request_ids,
            fingerprint=fingerprint,
            **options,
        )
        return self._run(recording, options)

    def get_latest_fault(
        self, instance_id: str, *, view: View = UNSPECIFIED, **options: Unpack[CallOptions]
    ) -> fault_pb2.Fault | None:
        """The instance's newest fault, or None when it has none; FULL view unless told."""
        return self._run(self._client.get_latest_fault(instance_id, view=view, **options), options)

    def batch_get_latest_faults(
        self,
        instance_ids: Iterable[str],
        *,
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> list[fault_pb2.Fault]:
        """The latest fault of each given instance that has one (at most 1,000 ids).

        BASIC view (no details) unless told: what a list view shows.
        """
        # Listed here: a generator would be run on the loop's thread.
        ids = list(instance_ids)
        return self._run(self._client.batch_get_latest_faults(ids, view=view, **options), options)

    def list_faults(
        self,
        instance_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> fault_service_pb2.ListFaultsResponse:
        """One page of the instance's faults, newest first, and the next page's token."""
        listing = self._client.list_faults(
            instance_id, page_size=page_size, page_token=page_token, view=view, **options
        )
        return self._run(listing, options)

    def iter_faults(
        self,
        instance_id: str,
        *,
        page_size: int = 0,
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> Iterator[fault_pb2.Fault]:
        """Every fault of the instance, newest first, fetched a page at a time.

        `timeout` is the deadline of each page's call.
        """
        page_token = ""
        while True:
            page = self.list_faults(
                instance_id, page_size=page_size, page_token=page_token, view=view, **options
            )
            yield from page.faults
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def search_faults(
        self,
        filter_: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        view: View = UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> fault_service_pb2.SearchFaultsResponse:
        """One page of the faults of any instance, or of those that match `filter_`, the one
        that occurred last first (admins)."""
        searching = self._client.search_faults(
            filter_, page_size=page_size, page_token=page_token, view=view, **options
        )
        return self._run(searching, options)

    def rank_faults(
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
        """The faults that occurred most in a window, each with its count per interval (admins)."""
        ranking = self._client.rank_faults(
            filter_,
            start_time=start_time,
            end_time=end_time,
            interval_count=interval_count,
            max_faults=max_faults,
            view=view,
            **options,
        )
        return self._run(ranking, options)

    def clear_faults(self, instance_id: str, **options: Unpack[CallOptions]) -> int:
        """Clears the instance's faults; returns how many were cleared."""
        return self._run(self._client.clear_faults(instance_id, **options), options)

    def _run(self, call: Coroutine[Any, Any, _T], options: CallOptions) -> _T:
        # The call's deadline ends it on the loop; the wait outlasts that
        # only when the loop itself does not answer.
        timeout = options.get("timeout", self._timeout)
        try:
            return self._loop_thread.run(
                call, timeout=None if timeout is None else timeout + LOOP_GRACE
            )
        except TimeoutError as error:
            raise FaultServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, str(error)) from error
