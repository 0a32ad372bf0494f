"""Protobuf wire format written by hand, to send requests no well-behaved client would."""

from __future__ import annotations

import grpc

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


def raw_method(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A unary method that takes and returns bytes as they are on the wire."""
    return channel.unary_unary(method)
