"""The public broker port of `tokenmeter up`, opened only once the embedded broker has its topics.

Why: tansu 0.6 (memory storage) acknowledges a produce to a topic it does not have yet, and those records are
lost when the topic then comes into being (measured: a producer hammering a freshly restarted broker lost every
record acknowledged in the second before `CreateTopics`; the soak lost a file collector's batch acknowledged
1.0 s after a broker SIGKILL). Every running Kafka client caches the broker's address and reconnects within
milliseconds, so a restarted broker on the public port always races them. Hence the broker listens on a private
port (advertising the public one), its topics are created through a direct connection to that private port, and
only then does this gate open the public port and forward bytes to it (kernel `splice`, no copy into Python).
While the broker is down or being prepared, the public port refuses connections: clients just retry.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from tokenmeter.topics import topic_specs

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_CHUNK = 1 << 16


async def _create_topics_direct(host: str, port: int, partitions: int, timeout_s: float) -> None:
    from aiokafka.conn import create_conn  # here, not with the module: as app/broker.py (`tokenmeter status`)
    from aiokafka.protocol.admin import CreateTopicsRequest

    conn = await create_conn(host, port, request_timeout_ms=int(timeout_s * 1000))
    try:
        request = CreateTopicsRequest(create_topic_requests=[
            (spec.name, partitions, 1, [], [("cleanup.policy", "compact")] if spec.compacted else [])
            for spec in topic_specs()], timeout=int(timeout_s * 1000), validate_only=False)
        response = await conn.send(request)
    finally:
        conn.close()
    failed = [error[:2] for error in response.topic_errors if error[1] not in (0, _TOPIC_ALREADY_EXISTS)]
    if failed:
        raise OSError(f"CreateTopics on {host}:{port} failed: {failed}")


def create_topics_direct(host: str, port: int, partitions: int, timeout_s: float = 20.0) -> None:
    """Create tokenmeter's topics on the broker at host:port over one connection to exactly that address (an
    admin client would follow the advertised address, i.e. the still closed public port). Retries while the
    broker comes up."""
    import asyncio  # here: `tokenmeter status` imports this module (through app.supervisor) and runs no loop
    import time

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            asyncio.run(asyncio.wait_for(_create_topics_direct(host, port, partitions, 5.0), 6.0))
            return
        except (OSError, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001 - not listening yet, or busy
            last = exc
            time.sleep(0.05)
    raise OSError(f"broker at {host}:{port} did not accept topic creation within {timeout_s:.0f} s: {last!r}")


class BrokerGate:
    """Listens on the public port while open and forwards each connection to the broker's private port."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.target: int | None = None
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def open(self, target_port: int) -> None:
        """Accept on the public port from now on, forwarding to target_port (the broker's private port)."""
        self.close()
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.port))
        server.listen(128)
        self.target, self._server = target_port, server
        threading.Thread(target=self._accept, args=(server, target_port), name="broker-gate", daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and cut the forwarded ones (their broker is gone or going)."""
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            _shut(conn)

    def _accept(self, server: socket.socket, target_port: int) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection((self.host, target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._server is not server:  # closed meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            pumps_left = [2]  # the second pump to finish closes both sockets
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, pumps_left), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pumps_left: list[int]) -> None:
        read_end, write_end = os.pipe()
        try:
            while True:
                moved = os.splice(src.fileno(), write_end, _CHUNK)
                if moved == 0:
                    break
                while moved:
                    moved -= os.splice(read_end, dst.fileno(), moved)
        except OSError:
            pass
        finally:
            os.close(read_end)
            os.close(write_end)
            for sock in (src, dst):
                _shut(sock)
            with self._lock:
                pumps_left[0] -= 1
                last = pumps_left[0] == 0
                if last:
                    self._conns.discard(src)
                    self._conns.discard(dst)
            if last:
                src.close()
                dst.close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
