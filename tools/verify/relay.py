"""Local listeners on 127.0.0.1 that relay each connection over a fresh port-forward stream, as `kubectl
port-forward` does, so the HTTP checks can use plain URLs."""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from typing import Any, Callable

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
            return
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
        # A short poll interval: shutdown() waits for the serving loop to notice it.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="verify-forward", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "LocalForward":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()
        self.server_close()


