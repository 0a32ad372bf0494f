"""The batcher under failure and overload: its callers always get an answer, and soon."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest

from faultsvc import serving
from faultsvc.app import FaultServer
from faultsvc.config import Settings
from faultsvc.errors import Overloaded, Unavailable
from faultsvc.storage.batching import Batcher
from tests.support.calls import Stub, record


class Fatal(BaseException):
    """Escapes every `except Exception`: what kills a task that has a bug."""


async def echo(items: Sequence[int]) -> list[int | Exception]:
    return list(items)


class Gate:
    """A batch function that holds each batch until opened, and remembers what it ran."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.batches: list[list[int]] = []

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await self.opened.wait()
        return list(items)


async def test_a_hook_that_raises_fails_its_batch_and_the_batcher_goes_on() -> None:
    batcher: Batcher[int, int] = Batcher("test", echo, max_batch=10)

    def broken_hook(size: int, waited: float) -> None:
        raise ZeroDivisionError

    batcher.on_batch = broken_hook
    batcher.start()
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(batcher.submit(1), 5)
    batcher.on_batch = lambda size, waited: None
    assert await asyncio.wait_for(batcher.submit(2), 5) == 2
    await batcher.close()


async def test_too_few_results_fail_the_batch_and_the_batcher_goes_on() -> None:
    async def short(items: Sequence[int]) -> list[int | Exception]:
        results: list[int | Exception] = list(items)
        return results[1:] if len(results) > 1 else results

    batcher: Batcher[int, int] = Batcher("test", short, max_batch=10)
    batcher.start()
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(n) for n in range(3)), return_exceptions=True), 5
    )
    assert all(isinstance(result, RuntimeError) for result in results), results
    assert await asyncio.wait_for(batcher.submit(7), 5) == 7
    await batcher.close()


async def test_a_dead_batcher_fails_waiting_and_later_callers_at_once() -> None:
    gate = Gate()

    async def dies(items: Sequence[int]) -> list[int | Exception]:
        await gate(items)
        raise Fatal("a bug")

    batcher: Batcher[int, int] = Batcher("test", dies, max_batch=1)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(1))
    second = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    gate.opened.set()
    for waiting in (first, second):
        with pytest.raises(Unavailable):
            await asyncio.wait_for(waiting, 5)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(batcher.submit(3), 5)
    assert isinstance(await asyncio.wait_for(batcher.stopped(), 5), Fatal)
    await batcher.close()


async def test_a_full_queue_turns_calls_away_at_once_with_a_retry_delay() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher("test", gate, max_batch=1, max_pending=3)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)  # taken into the first batch, which the gate holds
    waiting = [asyncio.ensure_future(batcher.submit(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as turned_away:
        await asyncio.wait_for(batcher.submit(4), 1)
    assert turned_away.value.retry_after_seconds
    assert turned_away.value.code == grpc.StatusCode.UNAVAILABLE
    gate.opened.set()
    assert await asyncio.gather(running, *waiting) == [0, 1, 2, 3]
    await batcher.close()


async def test_a_call_whose_caller_gave_up_is_never_run() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher("test", gate, max_batch=10)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)
    abandoned = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    abandoned.cancel()  # as grpc.aio does when the caller's deadline passes
    gate.opened.set()
    assert list(await asyncio.gather(running, kept)) == [0, 2]
    await batcher.close()
    assert gate.batches == [[0], [2]]


async def test_a_server_whose_writer_dies_answers_unavailable_and_stops(
    server: FaultServer, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    await record(stub, "i-before")

    async def fatal(*_: object) -> None:
        raise Fatal("a bug in the writer")

    monkeypatch.setattr(server.store._writer, "_settle", fatal)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await record(stub, "i-during")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert isinstance(await asyncio.wait_for(server.broken(), 5), Fatal)
    with pytest.raises(grpc.aio.AioRpcError) as later:
        await record(stub, "i-after")
    assert later.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_serve_stops_with_an_error_when_a_part_of_the_server_dies(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fatal(self: Batcher[int, int]) -> None:
        raise Fatal("a bug in a batcher")

    monkeypatch.setattr(Batcher, "_run", fatal)
    with pytest.raises(serving.ServerBroken, match="a bug in a batcher"):
        await asyncio.wait_for(serving.serve(settings, stop_signals=()), 30)
