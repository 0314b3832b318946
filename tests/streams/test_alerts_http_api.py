"""The dispatcher's optional /health and /metrics port (TOKENMETER_ALERTS_PORT) on a real aiohttp server."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from streams.alerts.http_api import serve
from tokenmeter.settings import free_port


class _Counters:
    def health(self) -> dict:
        return {"delivered": 3, "failed": 0}


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_silent_connections_to_the_health_port_are_closed():
    """hostile24 left it open: a client that sends nothing (or half a head) held a connection of the dispatcher's
    health port for aiohttp's keep-alive default, 3630 s; a few thousand of them use up its descriptors."""
    port = free_port()

    async def scenario() -> tuple[list[bytes], float, int]:
        async with serve(_Counters(), "127.0.0.1", port, idle_timeout_s=1.0):
            def clients() -> tuple[list[bytes], float, int]:
                started = time.monotonic()
                silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
                silent[0].sendall(b"GET /health HTTP/1.1\r\nHo")
                try:
                    answers = [_read_until_closed(s) for s in silent]  # 10 s socket timeout: the old server held them
                finally:
                    for s in silent:
                        s.close()
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code
                return answers, time.monotonic() - started, status

            return await asyncio.to_thread(clients)

    answers, took, status = asyncio.run(scenario())
    assert all(not a or b" 408 " in a.split(b"\r\n", 1)[0] for a in answers), answers
    assert took < 8 and status == 200
