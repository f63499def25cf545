"""Local listeners on 127.0.0.1 that relay each connection over a fresh port-forward stream, as `kubectl
port-forward` does, so the HTTP checks can use plain URLs."""

from __future__ import annotations

import select
import socket
import socketserver
import sys
import threading
from typing import Any, Callable, Optional

from tools.verify.kube import KubeError
from tools.verify.report import progress


def relay(a: Any, b: Any, idle_timeout: float) -> None:
    """Copy bytes both ways until either side closes or nothing moves for idle_timeout."""
    peers = {a: b, b: a}
    try:
        while True:
            readable, _, _ = select.select(list(peers), [], [], idle_timeout)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)
    except OSError:
        return


class _RelayHandler(socketserver.BaseRequestHandler):
    server: "LocalForward"

    def handle(self) -> None:
        # The relay passes on each piece as it arrives: Nagle's algorithm would hold a response's last
        # piece back until the client's delayed ACK, adding some 40 ms to every measured latency.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            remote = self.server.open_stream()
        except KubeError as exc:
            progress(str(exc))
            self.server.stream_refused(str(exc))
            return
        self.server.stream_opened()
        try:
            relay(self.request, remote, self.server.idle_timeout)
        finally:
            remote.close()


class LocalForward(socketserver.ThreadingTCPServer):
    """A listener on 127.0.0.1 (ephemeral port) relaying each connection over a fresh stream from open_stream.

    What `kubectl port-forward` does, so that the HTTP checks can use plain URLs."""

    daemon_threads = True

    def __init__(self, open_stream: Callable[[], Any], idle_timeout: float):
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.open_stream = open_stream
        self.idle_timeout = idle_timeout
        self._count_lock = threading.Lock()
        self.streams_opened = 0
        self.stream_error: Optional[str] = None  # the last stream that could not be opened: why
        # A short poll interval: shutdown() waits for the serving loop to notice it.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="verify-forward", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stream_opened(self) -> None:
        with self._count_lock:
            self.streams_opened += 1

    def stream_refused(self, why: str) -> None:
        with self._count_lock:
            self.stream_error = why

    def failure(self) -> Optional[str]:
        """Why this forward did not work, when it was used and not one stream could be opened; else None."""
        with self._count_lock:
            return self.stream_error if self.streams_opened == 0 else None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that could not be relayed (its thread would not start): one line, not socketserver's
        traceback; the client sees it closed, and its request fails."""
        exc = sys.exc_info()[1]
        progress(f"port-forward: a connection was not relayed: {type(exc).__name__}: {exc}")

    def __enter__(self) -> "LocalForward":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()
        self.server_close()


