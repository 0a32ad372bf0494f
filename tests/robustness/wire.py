"""Protobuf wire format written by hand, to send requests no well-behaved client would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from faultsvc.handlers import method_descriptor

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = range(6)


def varint(value: int) -> bytes:
    """`value` as a base-128 varint; negative numbers as their 64-bit two's complement."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A string, bytes or message field: tag, length, payload."""
    return tag(number, LENGTH_DELIMITED) + varint(len(payload)) + payload


def number(number: int, value: int) -> bytes:
    """An integer field (int32, int64, bool, enum)."""
    return tag(number, VARINT) + varint(value)


def raw_method(channel: grpc.aio.Channel, method: str) -> Callable[..., Awaitable[bytes]]:
    """A method that takes and returns bytes as they are on the wire.

    A method that answers with a stream answers with its first response; the
    stream is then cancelled.
    """
    descriptor = method_descriptor(method)
    if descriptor is None or not descriptor.server_streaming:
        return channel.unary_unary(method)
    stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(method)

    async def first_response(data: bytes, **options: Any) -> bytes:
        call = stream(data, **options)
        try:
            response = await call.read()
        finally:
            call.cancel()
        assert isinstance(response, bytes), "the stream ended without a response"
        return response

    return first_response
