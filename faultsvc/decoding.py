"""Requests from bytes: a request that does not parse is the caller's INVALID_ARGUMENT.

grpc.aio parses a request with its handler's `request_deserializer` before
any interceptor's behaviour runs, and answers a parse failure with UNKNOWN and
the parser's exception text. So the DecodingInterceptor gives grpc handlers
that take the request's bytes as they came, and parses them inside the
behaviour, where the error interceptor's one mapping answers the failure.

The protobuf runtime says only that a message did not parse ("String field
had bad UTF-8", "Wire format was corrupt"). Callers need the field, so when
parsing fails the request's wire format is walked against its descriptor to
find the first field at fault; nothing here names a field of the contract.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from faultsvc.errors import FaultServiceError, InvalidArgument, MalformedRequest
from faultsvc.interceptors import Context, Continuation, Handler

# The protobuf runtime refuses messages nested deeper than this.
MAX_NESTING = 100

_VARINT, _FIXED64, _LENGTH_DELIMITED, _START_GROUP, _END_GROUP, _FIXED32 = range(6)


@dataclass(frozen=True)
class WireProblem:
    """What is wrong with a request's bytes, and in which field when one can be named."""

    field: str | None
    description: str


class RequestDecoder:
    """Parses one RPC's requests; raises InvalidArgument or MalformedRequest for bad bytes."""

    def __init__(self, parse: Callable[[bytes], Any], request_type: Descriptor | None) -> None:
        self._parse = parse
        self._request_type = request_type

    @classmethod
    def for_method(cls, method: str, parse: Callable[[bytes], Any]) -> RequestDecoder:
        """The decoder of `method` ("/package.Service/Method"), its type found by name."""
        return cls(parse, request_type_of(method))

    def __call__(self, data: bytes) -> Any:
        try:
            return self._parse(data)
        except DecodeError:
            raise self._error(data) from None

    def _error(self, data: bytes) -> FaultServiceError:
        problem = find_wire_problem(data, self._request_type)
        if problem is not None and problem.field is not None:
            return InvalidArgument.field(problem.field, problem.description)
        name = self._request_type.full_name if self._request_type else "message"
        why = problem.description if problem else "does not parse"
        return MalformedRequest(f"the request is not a valid {name}: it {why}")


class DecodingInterceptor(grpc.aio.ServerInterceptor):
    """Moves request parsing from grpc into each handler's behaviour, for every RPC.

    Put it innermost (last), so that the error interceptor sees its errors.
    A handler that reads a request stream with `context.read()` instead of
    its request iterator would get bytes: none does.
    """

    def __init__(self) -> None:
        self._decoding: dict[Handler, Handler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        decoding = self._decoding.get(handler)
        if decoding is None:
            decode = RequestDecoder.for_method(
                handler_call_details.method, handler.request_deserializer
            )
            decoding = self._decoding[handler] = decoding_handler(handler, decode)
        return decoding


def decoding_handler(handler: Handler, decode: Callable[[bytes], Any]) -> Handler:
    """`handler`, taking its requests as bytes and parsing them with `decode`."""
    behaviours: Any = handler  # the stubs type behaviours as the sync API's
    serializers: dict[str, Any] = {
        "request_deserializer": None,
        "response_serializer": handler.response_serializer,
    }
    if behaviours.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _decoding_request(behaviours.unary_unary, decode), **serializers
        )
    if behaviours.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _decoding_request(behaviours.unary_stream, decode), **serializers
        )
    if behaviours.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _decoding_requests(behaviours.stream_unary, decode), **serializers
        )
    return grpc.stream_stream_rpc_method_handler(
        _decoding_requests(behaviours.stream_stream, decode), **serializers
    )


def _decoding_request(behaviour: Any, decode: Callable[[bytes], Any]) -> Any:
    # grpc.aio tells a response stream (async generator) from a call that
    # writes its responses (coroutine) by the function's kind: keep it.
    if inspect.isasyncgenfunction(behaviour):

        async def streaming(data: bytes, context: Context) -> AsyncIterator[Any]:
            async for response in behaviour(decode(data), context):
                yield response

        return streaming

    async def unary(data: bytes, context: Context) -> Any:
        return await behaviour(decode(data), context)

    return unary


def _decoding_requests(behaviour: Any, decode: Callable[[bytes], Any]) -> Any:
    async def decoded(requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for data in requests:
            yield decode(data)

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
            async for response in behaviour(decoded(requests), context):
                yield response

        return streaming

    async def unary(requests: AsyncIterator[bytes], context: Context) -> Any:
        return await behaviour(decoded(requests), context)

    return unary


def request_type_of(method: str) -> Descriptor | None:
    """The request message of a method path, from the default descriptor pool; None if unknown."""
    try:
        found = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    except KeyError:
        return None
    request_type: Descriptor = found.input_type
    return request_type


def find_wire_problem(data: bytes, message_type: Descriptor | None) -> WireProblem | None:
    """The first thing in `data` that keeps it from parsing as `message_type`, if any."""
    try:
        _walk_message(_Wire(data), len(data), message_type, "", 0, None)
    except _Corrupt as corrupt:
        return WireProblem(corrupt.field, corrupt.description)
    return None


class _Corrupt(Exception):
    def __init__(self, field: str | None, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


class _Wire:
    """A cursor over the bytes of a message."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def varint(self, end: int, field: str | None, what: str) -> int:
        value = 0
        for shift in range(0, 70, 7):
            if self.position >= end:
                raise _Corrupt(field, f"is cut short inside {what}")
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise _Corrupt(field, f"has {what} longer than 10 bytes")

    def skip(self, count: int, end: int, field: str | None) -> None:
        if self.position + count > end:
            raise _Corrupt(field, "is cut short: its value runs past the end of the request")
        self.position += count


def _walk_message(
    wire: _Wire,
    end: int,
    message_type: Descriptor | None,
    prefix: str,
    depth: int,
    group_number: int | None,
) -> None:
    """Checks fields up to `end` (or the end of the group `group_number`), as the runtime does.

    A field whose wire type does not match its declaration is an unknown field
    to the runtime, so only matching string and message fields are looked into.
    """
    occurrences: dict[int, int] = {}
    while wire.position < end:
        tag = wire.varint(end, prefix.rstrip(".") or None, "a field tag")
        number, wire_type = tag >> 3, tag & 7
        field = message_type.fields_by_number.get(number) if message_type else None
        index = occurrences[number] = occurrences.get(number, -1) + 1
        name = _field_path(prefix, field, index)
        if number == 0:
            raise _Corrupt(prefix.rstrip(".") or None, "has a field numbered 0")
        if wire_type == _VARINT:
            wire.varint(end, name, "a number")
        elif wire_type == _FIXED64:
            wire.skip(8, end, name)
        elif wire_type == _FIXED32:
            wire.skip(4, end, name)
        elif wire_type == _LENGTH_DELIMITED:
            _walk_length_delimited(wire, end, field, name, depth)
        elif wire_type == _START_GROUP:
            if depth >= MAX_NESTING:
                raise _Corrupt(name, f"nests messages more than {MAX_NESTING} deep")
            is_group = field is not None and field.type == FieldDescriptor.TYPE_GROUP
            group_type = field.message_type if field is not None and is_group else None
            _walk_message(wire, end, group_type, f"{name}." if name else "", depth + 1, number)
        elif wire_type == _END_GROUP:
            if number == group_number:
                return
            raise _Corrupt(prefix.rstrip(".") or None, "ends a group that was not started")
        else:
            raise _Corrupt(name, f"has the invalid wire type {wire_type}")
    if group_number is not None:
        raise _Corrupt(prefix.rstrip(".") or None, "is cut short inside a group")


def _walk_length_delimited(
    wire: _Wire, end: int, field: FieldDescriptor | None, name: str | None, depth: int
) -> None:
    length = wire.varint(end, name, "a length")
    start = wire.position
    wire.skip(length, end, name)
    if field is None:
        return
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            wire.data[start : start + length].decode("utf-8")
        except UnicodeDecodeError as error:
            raise _Corrupt(name, f"is not valid UTF-8 (byte {error.start} of the string)") from None
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        if depth >= MAX_NESTING:
            raise _Corrupt(name, f"nests messages more than {MAX_NESTING} deep")
        nested = _Wire(wire.data)
        nested.position = start
        _walk_message(nested, start + length, field.message_type, f"{name}.", depth + 1, None)


def _field_path(prefix: str, field: FieldDescriptor | None, index: int) -> str | None:
    if field is None:
        return None
    if field.is_repeated:
        return f"{prefix}{field.name}[{index}]"
    return f"{prefix}{field.name}"
