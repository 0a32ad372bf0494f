"""What a call came to, and what the database holds, for properties that allow either outcome."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
from sqlalchemy import false, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.storage.tables import instance_faults
from tests.support.calls import bad_request_fields

Response = TypeVar("Response")


async def outcome(call: Awaitable[Response]) -> Response | grpc.aio.AioRpcError:
    """The call's response, or the error it failed with."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return error


def named_field(error: grpc.aio.AioRpcError) -> str:
    """The one field an INVALID_ARGUMENT names; fails on any other status."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    (field,) = bad_request_fields(error)
    return field


async def stored_rows(engine: AsyncEngine, *, live_only: bool = False) -> int:
    """How many rows `instance_faults` holds, read from the database itself."""
    query = select(func.count()).select_from(instance_faults)
    if live_only:
        query = query.where(instance_faults.c.deleted == false())
    async with engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())
