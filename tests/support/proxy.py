"""A TCP proxy in front of a MySQL server that can lose the server's answer to a COMMIT.

That is the one failure a client cannot tell apart: the server committed, and
the connection broke before the client heard so. The proxy forwards the
COMMIT, waits for the server's answer, and then closes both connections
instead of passing the answer on.
"""

from __future__ import annotations

import asyncio
import contextlib

COMMIT = b"\x03COMMIT"  # COM_QUERY "COMMIT", as a MySQL client sends it


class CommitAnswerLosingProxy:
    """Listens on 127.0.0.1:`port` and forwards each connection to the upstream server."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.lost_answers = 0
        self._answers_to_lose = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    def lose_next_commit_answers(self, count: int = 1) -> None:
        self._answers_to_lose = count

    async def start(self) -> CommitAnswerLosingProxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection(
            self.upstream_host, self.upstream_port
        )
        commit_sent = asyncio.Event()
        pumps = (
            asyncio.create_task(self._requests(client_reader, server_writer, commit_sent)),
            asyncio.create_task(self._answers(server_reader, client_writer, commit_sent)),
        )
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pumps.difference_update(pumps)
            for writer in (client_writer, server_writer):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        commit_sent: asyncio.Event,
    ) -> None:
        """Client to server, packet by packet: 3 bytes of length, 1 of sequence, the payload."""
        while True:
            try:
                header = await reader.readexactly(4)
                payload = await reader.readexactly(int.from_bytes(header[:3], "little"))
            except asyncio.IncompleteReadError:
                return
            if payload == COMMIT and self._answers_to_lose > 0:
                self._answers_to_lose -= 1
                commit_sent.set()  # before the server can answer
            writer.write(header + payload)
            await writer.drain()

    async def _answers(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        commit_sent: asyncio.Event,
    ) -> None:
        """Server to client; once a COMMIT to lose went up, its answer ends the connection."""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if commit_sent.is_set():
                self.lost_answers += 1
                return
            writer.write(data)
            await writer.drain()
