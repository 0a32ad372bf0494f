"""A bare grpc.aio server: the ceiling that Python gRPC allows on this machine.

It serves the FaultService method paths with no servicer, no interceptor and no
protobuf: every call gets precomputed response bytes, the same bytes the real
server answered for that workload, so one h2load command drives both servers
and the difference between them is the real server's own work.

The responses come from a JSON file mapping "METHOD_PATH" (non-admin callers)
and "METHOD_PATH admin" (callers whose `x-roles` holds `admin`) to the
response's hex bytes:

    python -m bench.echo_server --listen 127.0.0.1:50099 --responses responses.json

It prints "listening on HOST:PORT" once it accepts calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Mapping
from pathlib import Path

import grpc

ADMIN_SUFFIX = " admin"


def _identity(data: bytes) -> bytes:
    return data


def _reply_with(response: bytes) -> grpc.RpcMethodHandler[bytes, bytes]:
    async def reply(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return response

    return grpc.unary_unary_rpc_method_handler(
        reply, request_deserializer=_identity, response_serializer=_identity
    )


def _is_admin(metadata: tuple[tuple[str, str | bytes], ...] | None) -> bool:
    for key, value in metadata or ():
        if key == "x-roles" and isinstance(value, str):
            return "admin" in (role.strip() for role in value.split(","))
    return False


class EchoHandler(grpc.GenericRpcHandler):
    """Answers each known method path with its precomputed response."""

    def __init__(self, responses: Mapping[str, bytes]) -> None:
        self._handlers = {key: _reply_with(value) for key, value in responses.items()}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        if _is_admin(handler_call_details.invocation_metadata):
            admin = self._handlers.get(method + ADMIN_SUFFIX)
            if admin is not None:
                return admin
        return self._handlers.get(method)


def load_responses(path: Path) -> dict[str, bytes]:
    raw: dict[str, str] = json.loads(path.read_text())
    return {key: bytes.fromhex(value) for key, value in raw.items()}


async def serve(listen: str, responses: Mapping[str, bytes]) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((EchoHandler(responses),))
    port = server.add_insecure_port(listen)
    await server.start()
    host = listen.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    parser.add_argument("--responses", type=Path, required=True, help="JSON: method -> hex bytes")
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop, as a server that uses it does"
    )
    args = parser.parse_args()
    responses = load_responses(args.responses)
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.listen, responses))
    else:
        asyncio.run(serve(args.listen, responses))


if __name__ == "__main__":
    main()
