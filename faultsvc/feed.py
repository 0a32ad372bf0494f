"""The feed of recorded occurrences: one poller per process, fanned out to every watcher.

Every occurrence row carries `recorded`, the database's clock when it was
written. Commits do not land in that order: a transaction that wrote a
moment earlier may commit a moment later. So each poll reads again an
overlap window of `overlap` behind the database's clock, and drops by id
what it saw before. The bound (docs/fleet.md): an occurrence is streamed if
it becomes visible within `overlap` of its recording time; commits are
bounded by the database timeout, far below the default overlap of 30 s.

The window is cheap to read again: the database counts the part read
before, and only when the count differs from the ids seen there (something
committed late) are its ids read again; otherwise only what was recorded
since the last poll is. Only new occurrences are fetched whole.

A resume token is the feed position its batch was read up to: every
occurrence not yet streamed was recorded at or after it. Resuming replays
from there, so occurrences recorded within the overlap before it may come
again; each carries its id.

Each watcher has a bounded queue; a watcher whose queue would overflow is
ended with WATCHER_TOO_SLOW and the token to resume from, never left with a gap.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from faultsvc.errors import (
    FaultServiceError,
    InvalidArgument,
    ResumeTokenExpired,
    TooManyWatchers,
    Unavailable,
    WatcherTooSlow,
    WatchInterrupted,
)
from faultsvc.faults import MAX_CLOCK_SKEW, utc_now
from faultsvc.filters import FaultFilter
from faultsvc.occurrences import RecordedOccurrence, counted_in_order
from faultsvc.storage.fleet import FleetStore

log = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 0.5
DEFAULT_OVERLAP_SECONDS = 30.0
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_MAX_WATCHERS = 1000
DEFAULT_MAX_REPLAY_SECONDS = 3600.0
# A watcher that received nothing for this long gets a progress notice: a fresh token.
PROGRESS_SECONDS = 10.0
# Occurrences per read of a replay.
REPLAY_PAGE = 500
# After a failed poll, the next one waits this long.
RETRY_SECONDS = 1.0
TOKEN_VERSION = 1


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """Occurrences for one watcher, in feed order, and where to resume after them."""

    occurrences: list[RecordedOccurrence]
    resume_token: str


@dataclass(frozen=True, slots=True)
class _Poll:
    occurrences: list[RecordedOccurrence]
    low: datetime


class _Ended(Exception):
    """Why the feed ended a watcher: its queue overflowed, or the feed stopped."""

    def __init__(self, why: str, *, fell_behind: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.fell_behind = fell_behind


@dataclass(eq=False)
class Subscription:
    """One watcher's share of the feed: a bounded queue of the polls' matching occurrences."""

    fault_filter: FaultFilter
    with_details: bool
    capacity: int
    # Where the feed stood when it subscribed, and after the latest poll.
    start: datetime = datetime.min
    low: datetime = datetime.min
    _started: asyncio.Event = field(default_factory=asyncio.Event)
    _polls: collections.deque[_Poll] = field(default_factory=collections.deque)
    _queued: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _ended: _Ended | None = None

    def begin(self, low: datetime) -> None:
        """The feed is followed: the watcher starts from where it stands."""
        self.start = self.low = low
        self._started.set()

    async def started(self) -> None:
        """Returns once the watcher has begun; raises why it was ended before."""
        await self._started.wait()
        self.check()

    def offer(self, matching: list[RecordedOccurrence], low: datetime) -> None:
        """Queues a poll's occurrences that match, or ends the watcher when they do not fit.

        A watcher that has taken everything before takes a poll of any size:
        a burst is not a watcher falling behind.
        """
        if self._ended is not None:
            return
        if self._queued and self._queued + len(matching) > self.capacity:
            self.end(f"more than {self.capacity:,} occurrences waited for it", fell_behind=True)
            return
        if matching:
            self._polls.append(_Poll(matching, low))
            self._queued += len(matching)
            self._arrived.set()
        self.low = low

    def end(self, why: str, *, fell_behind: bool = False) -> None:
        if self._ended is None:
            self._ended = _Ended(why, fell_behind=fell_behind)
            self._polls.clear()
            self._queued = 0
            self._arrived.set()
            self._started.set()

    def check(self) -> None:
        """Raises why the watcher was ended, if it was."""
        if self._ended is not None:
            raise self._ended

    async def next(self, patience: float) -> _Poll | None:
        """The next queued poll, or None when none came within `patience` seconds."""
        while not self._polls:
            self.check()
            self._arrived.clear()
            try:
                async with asyncio.timeout(patience):
                    await self._arrived.wait()
            except TimeoutError:
                self.check()
                return None
        poll = self._polls.popleft()
        self._queued -= len(poll.occurrences)
        return poll


class FaultFeed:
    """Follows what every server records, for the watchers of this process.

    `start` starts the poller; it polls while someone watches and idles
    otherwise. `close` ends every watch (UNAVAILABLE, with its resume token)
    and stops the poller.
    """

    def __init__(
        self,
        fleet: FleetStore,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_watchers: int = DEFAULT_MAX_WATCHERS,
        max_replay_seconds: float = DEFAULT_MAX_REPLAY_SECONDS,
        progress_seconds: float = PROGRESS_SECONDS,
    ) -> None:
        self._fleet = fleet
        self._poll_seconds = poll_seconds
        self._overlap = timedelta(seconds=overlap_seconds)
        self._queue_size = queue_size
        self._max_watchers = max_watchers
        self.max_replay = timedelta(seconds=max_replay_seconds)
        self._progress_seconds = progress_seconds
        self._subscriptions: set[Subscription] = set()
        self._watched = asyncio.Event()
        # Set once the poller knows where the feed stands, cleared while it idles.
        self._following = asyncio.Event()
        self._low = datetime.min
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fault-feed")

    async def close(self) -> None:
        """Ends every watch with its resume token, then stops the poller."""
        self._closed = True
        self._end_all("the server is stopping")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def broken(self) -> BaseException:
        """Returns the error that stopped the poller (a bug); never returns while it runs."""
        if self._task is None:
            await asyncio.Event().wait()
        assert self._task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._task)
        if self._failure is None:
            await asyncio.Event().wait()  # closed: the server is stopping
        assert self._failure is not None
        return self._failure

    @property
    def watchers(self) -> int:
        return len(self._subscriptions)

    async def watch(
        self, fault_filter: FaultFilter, resume_from: datetime | None, *, with_details: bool
    ) -> AsyncIterator[FeedBatch]:
        """The occurrences that match, from now on or from a resume position, in batches.

        The first batch comes at once: the occurrences replayed, or none (a
        progress notice with the first token). Then a batch per poll that
        found some, and a progress notice after every quiet spell.
        """
        subscription = await self._subscribe(fault_filter, with_details)
        token = encode_resume_token(subscription.start)
        try:
            replayed: set[str] = set()
            if resume_from is not None:
                async for batch, again in self._replay(subscription, resume_from):
                    replayed |= again
                    token = batch.resume_token
                    yield batch
            else:
                yield FeedBatch([], token)
            while True:
                try:
                    poll = await subscription.next(self._progress_seconds)
                except _Ended as ended:
                    raise _ending(ended, token) from None
                if poll is None:
                    token = encode_resume_token(subscription.low)
                    yield FeedBatch([], token)
                    continue
                token = encode_resume_token(poll.low)
                fresh = [o for o in poll.occurrences if o.id not in replayed]
                if fresh:
                    yield FeedBatch(fresh, token)
        except _Ended as ended:
            raise _ending(ended, token) from None
        finally:
            self._subscriptions.discard(subscription)

    async def _replay(
        self, subscription: Subscription, resume_from: datetime
    ) -> AsyncIterator[tuple[FeedBatch, set[str]]]:
        """What was recorded from `resume_from` on, a page at a time, while live polls queue up.

        Each batch comes with the ids the live polls may bring again (those
        recorded since the feed's position when the watcher subscribed).
        Everything not yet streamed after a page was recorded at or after the
        earlier of its last occurrence and that position: its token.
        """
        after = (resume_from, "")
        while True:
            page = await self._fleet.replay(
                after,
                subscription.fault_filter,
                REPLAY_PAGE,
                with_details=subscription.with_details,
            )
            subscription.check()
            if page:
                after = page[-1].position
            token = encode_resume_token(min(after[0], subscription.start))
            again = {o.id for o in page if o.recorded >= subscription.start}
            yield FeedBatch(counted_in_order(page), token), again
            if len(page) < REPLAY_PAGE:
                return

    async def _subscribe(self, fault_filter: FaultFilter, with_details: bool) -> Subscription:
        if self._closed or self._failure is not None:
            raise WatchInterrupted("the server is stopping", "")
        if len(self._subscriptions) >= self._max_watchers:
            raise TooManyWatchers(
                f"this server follows {self._max_watchers:,} watchers already; "
                "watch through another server, or later"
            )
        subscription = Subscription(fault_filter, with_details, self._queue_size)
        self._subscriptions.add(subscription)
        if self._following.is_set():
            subscription.begin(self._low)
        else:
            self._watched.set()
        try:
            await subscription.started()
        except _Ended as ended:
            self._subscriptions.discard(subscription)
            raise _ending(ended, "") from None
        except BaseException:
            self._subscriptions.discard(subscription)
            raise
        return subscription

    def check_resume_position(self, resume_from: datetime) -> None:
        """OUT_OF_RANGE for a position before the replay window; INVALID_ARGUMENT if ahead."""
        now = utc_now()
        if resume_from < now - self.max_replay:
            raise ResumeTokenExpired(
                f"the resume token is from {resume_from.isoformat(timespec='seconds')}Z, more "
                f"than {self.max_replay} ago: what came since is not replayed; search for it "
                "(SearchFaults) and watch from now"
            )
        if resume_from > now + MAX_CLOCK_SKEW:
            raise InvalidArgument.field("resume_token", "is not a token this service issued")

    async def _run(self) -> None:
        """Polls while someone watches; a database failure ends the watches, a bug the feed."""
        try:
            while True:
                await self._watched.wait()
                if not self._subscriptions:
                    self._watched.clear()
                    continue
                try:
                    await self._follow()
                except Unavailable as error:
                    log.warning("the feed of occurrences stopped: %s", error)
                    self._end_all("the database does not answer")
                    await asyncio.sleep(RETRY_SECONDS)
                finally:
                    self._following.clear()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("the feed of occurrences failed")
            self._failure = error
            self._end_all("the server cannot follow the feed")

    async def _follow(self) -> None:
        """Polls until no one watches: each poll's new occurrences go to every watcher.

        The first read takes what is in the window as seen: a watcher starts from now.
        """
        start = await self._fleet.feed_now() - self._overlap
        first = await self._fleet.poll_feed(start, None, 0, (), with_details=False, fetch=False)
        seen = dict(first.recorded)
        checked_until = first.now
        self._low = low = max(start, first.now - self._overlap)
        self._following.set()
        for subscription in self._subscriptions:
            subscription.begin(low)
        while self._subscriptions:
            await asyncio.sleep(self._poll_seconds)
            expected = sum(1 for recorded in seen.values() if low <= recorded < checked_until)
            poll = await self._fleet.poll_feed(
                low,
                checked_until,
                expected,
                seen,
                with_details=any(s.with_details for s in self._subscriptions),
            )
            seen.update(poll.recorded)
            checked_until = poll.now
            low = max(low, poll.now - self._overlap)
            for occurrence_id in [i for i, recorded in seen.items() if recorded < low]:
                del seen[occurrence_id]
            self._low = low
            self._fan_out(counted_in_order(poll.new), low)
        self._watched.clear()

    def _fan_out(self, occurrences: list[RecordedOccurrence], low: datetime) -> None:
        values = [_match_values(occurrence) for occurrence in occurrences]
        for subscription in list(self._subscriptions):
            matches = subscription.fault_filter.matches
            subscription.offer(
                [o for o, v in zip(occurrences, values, strict=True) if matches(v)], low
            )

    def _end_all(self, why: str) -> None:
        for subscription in list(self._subscriptions):
            subscription.end(why)
        self._subscriptions.clear()


def _ending(ended: _Ended, token: str) -> FaultServiceError:
    """The status that ends a watch, with the token to resume it from."""
    if ended.fell_behind:
        return WatcherTooSlow(f"the watcher fell behind: {ended.why}", token)
    return WatchInterrupted(ended.why, token)


def _match_values(occurrence: RecordedOccurrence) -> dict[str, str]:
    """What a filter compares in an occurrence: its fault's fields, and its own request ids."""
    fault = occurrence.fault
    return {
        "instance_id": fault.instance_id,
        "source": fault.source,
        "host": fault.host,
        "fingerprint": fault.fingerprint,
        "request_id": occurrence.request_id,
        "global_request_id": occurrence.global_request_id,
    }


def encode_resume_token(position: datetime) -> str:
    """An opaque token for a feed position: what follows it was recorded at or after it."""
    payload = json.dumps(["watch", TOKEN_VERSION, position.isoformat()])
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_resume_token(token: str) -> datetime | None:
    """The position in `token`, None for none; INVALID_ARGUMENT naming it when it is not ours."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        kind, version, position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if kind != "watch" or version != TOKEN_VERSION:
            raise ValueError("another kind of token")
        moment = datetime.fromisoformat(position)
        if moment.tzinfo is not None:
            raise ValueError("positions are naive UTC")
    # RecursionError: a forged token of deeply nested JSON arrays.
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, RecursionError):
        raise InvalidArgument.field("resume_token", "is not a token this service issued") from None
    return moment
