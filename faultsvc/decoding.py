"""Requests from bytes: a request that does not parse is the caller's INVALID_ARGUMENT.

grpc.aio parses a request with its handler's `request_deserializer` before
any interceptor's behaviour runs, and answers a parse failure with UNKNOWN and
the parser's exception text. So the DecodingInterceptor gives grpc handlers
that take the request's bytes as they came, and parses them inside the
behaviour, where the error interceptor's one mapping answers the failure.

The protobuf runtime says only that a message did not parse. A string that
is not valid UTF-8 is the one failure a caller can act on field by field, so
when parsing fails the request is parsed again, by the runtime still, as a
twin type whose strings are bytes: if that succeeds, the first string that is
not UTF-8 is named. Any other failure (corrupt wire format) names no field.
Both parses run at the runtime's C speed, whatever the request holds.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

from faultsvc.errors import FaultServiceError, InvalidArgument, MalformedRequest
from faultsvc.handlers import (
    Behaviour,
    Context,
    Continuation,
    Handler,
    Kind,
    method_descriptor,
    rewrap,
)


class RequestDecoder:
    """Parses one RPC's requests; raises InvalidArgument or MalformedRequest for bad bytes."""

    def __init__(self, parse: Callable[[bytes], Any], request_type: Descriptor | None) -> None:
        self._parse = parse
        self._request_type = request_type

    def __call__(self, data: bytes) -> Any:
        try:
            return self._parse(data)
        except DecodeError:
            raise self._error(data) from None

    def _error(self, data: bytes) -> FaultServiceError:
        if self._request_type is None:
            return MalformedRequest("the request does not parse")
        field = first_string_not_utf8(data, self._request_type)
        if field is not None:
            return InvalidArgument.field(field, "is not valid UTF-8")
        return MalformedRequest(
            f"the request is not a valid {self._request_type.full_name}: "
            "its wire format is corrupt or cut short"
        )


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
            method = method_descriptor(handler_call_details.method)
            decode = RequestDecoder(
                handler.request_deserializer, None if method is None else method.input_type
            )
            decoding = self._decoding[handler] = rewrap(
                handler,
                lambda behaviour, kind: decoding_behaviour(behaviour, kind, decode),
                request_deserializer=None,
            )
        return decoding


def decoding_behaviour(
    behaviour: Behaviour, kind: Kind, decode: Callable[[bytes], Any]
) -> Behaviour:
    """`behaviour`, taking its request (or request stream) as bytes and parsing it with `decode`."""

    def parsed(data: Any) -> Any:
        if kind.request_streaming:
            return (decode(item) async for item in data)
        return decode(data)

    if kind.yields:

        async def streaming(data: Any, context: Context) -> AsyncIterator[Any]:
            async for response in behaviour(parsed(data), context):
                yield response

        return streaming

    async def unary(data: Any, context: Context) -> Any:
        return await behaviour(parsed(data), context)

    return unary


def first_string_not_utf8(data: bytes, message_type: Descriptor) -> str | None:
    """The path of the first string field in `data` that is not UTF-8, if that is all that's wrong.

    None when `data` does not parse even with its strings taken as bytes.
    """
    try:
        twin = _bytes_twin(message_type).FromString(data)
    except DecodeError:
        return None
    return next(_strings_not_utf8(twin, message_type, ""), None)


def _strings_not_utf8(twin: Message, message_type: Descriptor, prefix: str) -> Iterator[str]:
    for twin_field, value in twin.ListFields():
        field = message_type.fields_by_name[twin_field.name]
        values = value if field.is_repeated else [value]
        for index, item in enumerate(values):
            path = f"{prefix}{field.name}" + (f"[{index}]" if field.is_repeated else "")
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    item.decode("utf-8")
                except UnicodeDecodeError:
                    yield path
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                yield from _strings_not_utf8(item, field.message_type, f"{path}.")


@functools.cache
def _bytes_twin(message_type: Descriptor) -> type[Message]:
    """A message class with the wire format of `message_type`, its string fields made bytes."""
    pool = descriptor_pool.DescriptorPool()
    _add_with_strings_as_bytes(pool, message_type.file, set())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(message_type.full_name))


def _add_with_strings_as_bytes(
    pool: descriptor_pool.DescriptorPool, file: FileDescriptor, added: set[str]
) -> None:
    if file.name in added:
        return
    for dependency in file.dependencies:
        _add_with_strings_as_bytes(pool, dependency, added)
    added.add(file.name)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pending = list(proto.message_type)
    while pending:
        message = pending.pop()
        pending.extend(message.nested_type)
        if message.options.map_entry:
            continue  # a map key must stay a string; a bad one names no field
        for field in message.field:
            if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    pool.Add(proto)
