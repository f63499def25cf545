"""HTTP to a model: urllib3's connection pool, one kept-alive connection per client, and a total deadline per request.

urllib3 rather than urllib: urllib would route loopback port-forwards through any *_proxy from the
environment. Its timeouts bound each socket operation, so a server that trickles its answer a byte at a
time would never trip them: a watchdog shuts the connection's socket down when the request's own
deadline passes, whatever phase the request is in.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# An OpenAI answer is kilobytes; a server that sends more than this is not one.
MAX_BODY_BYTES = 16 * 2**20
READ_CHUNK_BYTES = 64 * 1024


# The secrets in play (the gateway key): no text verify prints carries one, whatever a server echoes of it.
_SECRETS: list[str] = []
REDACTED = "[redacted]"


@contextlib.contextmanager
def redacting() -> Iterator[None]:
    """A run's scope for `conceal`: the secrets concealed within it are forgotten when it ends."""
    saved = list(_SECRETS)
    try:
        yield
    finally:
        _SECRETS[:] = saved


def conceal(secret: str) -> None:
    """From now on, `redacted` replaces `secret` (so `Bearer <secret>` too) wherever it appears."""
    if secret and secret not in _SECRETS:
        _SECRETS.append(secret)
        _SECRETS.sort(key=len, reverse=True)  # a longer secret first, should one hold another


def redacted(text: str) -> str:
    """`text` with every concealed secret replaced by [redacted]."""
    for secret in _SECRETS:
        text = text.replace(secret, REDACTED)
    return text


def escaped(text: str) -> str:
    """`text` safe to print on one line: control characters (a newline, a terminal's escape) and the other
    non-printables as their escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def printable(text: str, limit: int = 120) -> str:
    """What a server sent, redacted (before it is cut short, so no part of a secret is left), escaped, and at
    most `limit` characters of it."""
    text = redacted(text)
    return escaped(text[:limit]) + ("..." if len(text) > limit else "")


class AnswerTooLarge(urllib3.exceptions.HTTPError):
    """The server sent more than MAX_BODY_BYTES."""


@dataclass(frozen=True)
class Response:
    status: Optional[int]  # None when no HTTP response arrived at all
    body: bytes
    elapsed: float
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def problem(self) -> str:
        """Why the request did not succeed, in a few words."""
        if self.error is not None:
            return self.error
        text = self.body.decode("utf-8", "replace").strip()
        return f"HTTP {self.status}" + (f": {printable(text)}" if text else "")


class _Watchdog:
    """Shuts down the socket of the request under way when its deadline passes: every blocked read returns."""

    def __init__(self) -> None:
        self.sock: Optional[socket.socket] = None
        self.fired = False
        self._timer: Optional[threading.Timer] = None

    def arm(self, seconds: float) -> None:
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """Hands each new connection's socket to the client's watchdog."""

    sock: Optional[socket.socket]

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any):
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._watchdog = watchdog

    def connect(self) -> None:
        if self._watchdog.fired:  # a retry after the deadline: no new connection, so nothing outlives it
            raise TimeoutError("deadline")
        super().connect()  # type: ignore[misc]
        self._watchdog.sock = self.sock


class _WatchedConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


# A GET is safe to send twice: urllib3 resends it once on a new connection after a read error (a kept-alive
# connection that the server, or a port-forward's idle timeout, closed meanwhile; a read timeout counts too, but
# that timeout is the request's whole deadline, after which the watchdog lets no new connection open). Nothing
# else is retried: a refused connection or an error status is the answer verify reports.
GET_RETRY = urllib3.Retry(
    total=1, connect=0, read=1, status=0, other=0, redirect=0, allowed_methods=frozenset({"GET"}),
    raise_on_redirect=False, raise_on_status=False,
)


def _reason(exc: BaseException, timeout: float, deadline_passed: bool) -> str:
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason  # the last try's own error, as a request without retries would have raised it
    if isinstance(exc, AnswerTooLarge):
        return str(exc)
    # Before the timeouts: urllib3's NewConnectionError is a ConnectTimeoutError too.
    if isinstance(exc, ConnectionRefusedError) or isinstance(exc.__cause__, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, urllib3.exceptions.NewConnectionError) and not deadline_passed:
        # A name that does not resolve, a network that is unreachable: said as such, not as a timeout.
        return f"cannot connect: {printable(str(exc.__cause__ or exc))}"
    if deadline_passed or isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return f"timed out after {timeout:g} s"
    # urllib3 wraps what http.client raised: ('Connection aborted.', RemoteDisconnected(...)).
    inner = exc.args[1] if isinstance(exc, urllib3.exceptions.ProtocolError) and len(exc.args) > 1 else exc
    # The text may quote what the server sent (http.client's BadStatusLine holds its status line).
    if isinstance(inner, BaseException):
        return f"{type(inner).__name__}: {printable(str(inner))}" if str(inner) else type(inner).__name__
    return f"{type(exc).__name__}: {printable(str(exc))}"


class HttpClient:
    """Requests to one base URL over one kept-alive connection; each request ends within `timeout` seconds.

    With an `api_key`, every request carries it as `Authorization: Bearer`, as an OpenAI client sends it to the
    gateway; without one, none does. Redirects are never followed, so the key goes to no other host."""

    def __init__(self, base_url: str, timeout: float, host: Optional[str] = None, api_key: Optional[str] = None):
        parts = urlsplit(base_url)
        pool_class = _WatchedHTTPSPool if parts.scheme == "https" else _WatchedPool
        self._watchdog = _Watchdog()
        self._pool = pool_class(parts.hostname or "", parts.port, maxsize=1, retries=False, watchdog=self._watchdog)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._kept_alive = False
        # The interceptor routes by Host, and a port-forward's URL names 127.0.0.1.
        self._headers = {"Accept": "application/json", **({"Host": host} if host is not None else {})}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def request(self, path: str, payload: Optional[dict[str, Any]] = None, within: Optional[float] = None) -> Response:
        """GET path, or POST the payload to it, within the client's timeout or `within` seconds if less (what is
        left of a run's deadline); transport failures, and the deadline, come back as Response.error."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = self._headers if body is None else {**self._headers, "Content-Type": "application/json"}
        limit = self._timeout if within is None else max(min(self._timeout, within), 0.001)
        started = time.monotonic()
        try:
            self._watchdog.arm(limit)
        except RuntimeError as exc:  # no thread for the watchdog: the request is not sent without its deadline
            return Response(None, b"", 0.0, f"cannot start a thread: {exc}")
        try:
            try:
                return self._exchange(path, body, headers, started, limit)
            except urllib3.exceptions.ProtocolError:
                # A POST on a kept-alive connection that was closed meanwhile never got an answer either, so it
                # is sent once more on a new connection. urllib3's Retry cannot tell that from a server that took
                # the request and died answering it (both are its read errors), and resending that POST would
                # hide the crash, so only a POST on a reused connection is resent, and by hand.
                if body is None or not self._kept_alive or self._watchdog.fired:
                    raise
                self._kept_alive = False
                return self._exchange(path, body, headers, started, limit)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._kept_alive = False
            return Response(None, b"", time.monotonic() - started, _reason(exc, limit, self._watchdog.fired))
        finally:
            self._watchdog.disarm()

    def _exchange(self, path: str, body: Optional[bytes], headers: dict[str, str], started: float, limit: float) -> Response:
        timeout = urllib3.Timeout(connect=limit, read=limit)
        reply = self._pool.urlopen(
            "GET" if body is None else "POST",
            self._prefix + path,
            body=body,
            headers=headers,
            retries=GET_RETRY if body is None else False,
            redirect=False,
            timeout=timeout,
            preload_content=False,
        )
        try:
            data = bytearray()
            while chunk := reply.read(READ_CHUNK_BYTES):
                data += chunk
                if len(data) > MAX_BODY_BYTES:
                    raise AnswerTooLarge(f"answer larger than {MAX_BODY_BYTES // 2**20} MiB")
        finally:
            reply.release_conn()
        if self._watchdog.fired:
            raise TimeoutError("deadline")
        self._kept_alive = True
        return Response(reply.status, bytes(data), time.monotonic() - started)

    def close(self) -> None:
        self._pool.close()


def http_request(url: str, timeout: float, host: Optional[str] = None) -> Response:
    """One GET on a connection of its own."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with contextlib.closing(HttpClient(f"{parts.scheme}://{parts.netloc}", timeout, host)) as client:
        return client.request(path)
