"""tools.verify against servers that answer wrongly, slowly or with bytes no HTTP server should send.

Each stand-in runs on loopback and counts what it did, so that "bounded" is asserted as a count (bytes a
trickling server got to send before verify hung up, polls before it gave up), never as seconds.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any, Iterator, Optional

import pytest

from tests.test_verify import FAST, MODEL, FakeKube, by_check, deployment, double, pod, refused_url, run_json  # noqa: F401 (fixtures)
from tools.verify import checks as verdicts
from tools.verify import cli, client, probe, stack


class RawServer:
    """Answers every connection's request with the bytes `answer(path)` gives, sent `pause` seconds apart
    in pieces of `piece` bytes, then closes; counts what it sent before the client hung up."""

    def __init__(self, answer: Any, piece: int = 0, pause: float = 0.0):
        self.answer, self.piece, self.pause = answer, piece, pause
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.sent = 0
        self.hung_up = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            request = connection.recv(65536).decode("latin-1")
            path = request.split(" ")[1] if request.count(" ") >= 2 else "/"
            data: bytes = self.answer(path)
            step = self.piece or len(data) or 1
            try:
                for start in range(0, len(data), step):
                    if self.stopped.is_set():
                        return
                    connection.sendall(data[start : start + step])
                    self.sent += len(data[start : start + step])
                    if self.pause:
                        time.sleep(self.pause)
            except OSError:
                self.hung_up.set()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        self.thread.join(timeout=2)


@pytest.fixture
def raw_server() -> Iterator[Any]:
    servers: list[RawServer] = []

    def start(answer: Any, **pacing: Any) -> RawServer:
        servers.append(RawServer(answer, **pacing))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def http_answer(body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


TRICKLED_BYTES = 400  # one a twentieth of a second: 20 s for the whole answer


def test_a_trickling_body_ends_at_the_requests_deadline(raw_server):
    server = raw_server(lambda _: http_answer(b" " * (TRICKLED_BYTES - 100) + b'{"data": []}'), piece=1, pause=0.05)
    response = client.http_request(f"{server.url}/health", timeout=0.5)
    assert response.error == "timed out after 0.5 s"
    server.hung_up.wait(timeout=5)
    assert server.sent < TRICKLED_BYTES / 4, "verify kept reading past its deadline"


def test_each_completion_is_sent_with_what_is_left_of_the_run(monkeypatch):
    """With 2.5 s left and completions that take 1.5 s each, the second goes with 1 s, not the 2.5 s its worker
    had when it started. A clock of the test's own: each answer takes its 1.5 s from it."""
    left = [2.5]
    sent_within: list[Optional[float]] = []

    def answer(self: client.HttpClient, path: str, payload: Any = None, within: Optional[float] = None) -> client.Response:
        sent_within.append(within)
        if payload is not None:
            left[0] -= 1.5
        return client.Response(200, json.dumps({"choices": [{"message": {"content": "OK"}}]}).encode(), 1.5)

    monkeypatch.setattr(probe, "time_left", lambda options: left[0])
    monkeypatch.setattr(probe.HttpClient, "request", answer)
    options = verdicts.Options(requests=3, concurrency=1, timeout=30.0, deadline=0.0)
    first, second, third = probe.chat_completions(["http://127.0.0.1:9"], MODEL, options)
    assert sent_within == [None, 2.5, 1.0], "the untimed warm-up GET, then each completion with the time left"
    assert first.ok and second.ok and third.error == probe.PAST_DEADLINE


def test_a_request_ends_within_the_time_it_is_given_when_that_is_shorter_than_its_timeout(double):
    server = double(chat_delay=2.0)
    with contextlib.closing(client.HttpClient(server.url, 30.0)) as http:
        response = http.request("/v1/chat/completions", probe.completion_payload(MODEL), within=0.2)
    assert response.error == "timed out after 0.2 s"


def test_a_trickling_server_fails_every_check_and_the_run_ends(raw_server, capsys):
    server = raw_server(lambda _: http_answer(b'{"object": "list", "data": []}'), piece=1, pause=0.2)
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, "--requests", "1", "--timeout", "0.3")
    assert code == cli.EXIT_FAILED
    assert by_check(result)["health"]["detail"] == "timed out after 0.3 s"


def test_the_run_deadline_ends_a_wait_that_would_outlast_it(refused_url, capsys):
    polls = []
    original = client.http_request

    def counted(*args: Any, **kwargs: Any) -> client.Response:
        polls.append(1)
        return original(*args, **kwargs)

    probe_http, probe.http_request = probe.http_request, counted
    try:
        code, result = run_json(
            capsys, "--url", refused_url, "--model", MODEL, "--wait-ready", "600", "--deadline", "0.3", *FAST
        )
    finally:
        probe.http_request = probe_http
    # The wait takes the whole run, so health and models are not sent after it: the same answer however loaded
    # the machine, where a request given the last millisecond would time out or be refused by chance.
    assert code == cli.EXIT_FAILED and by_check(result)["health"]["detail"] == probe.PAST_DEADLINE
    assert by_check(result)["models"]["detail"] == probe.PAST_DEADLINE
    # At most two polls of the wait (one, then one more when the deadline comes), and nothing after them.
    assert len(polls) <= 2, "a 600 s wait went on past the run's 0.3 s deadline"


# Any byte sequence a server may send: verify reports it, never raises.
GARBAGE = {
    "nothing": b"",
    "not HTTP": b"\x00\xff\xfe garbage \r\n\r\n",
    "bad status line": b"HTTP/1.1 OK\r\n\r\n",
    "short body": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{",
    "broken chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "huge header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    "deep JSON": http_answer(b"[" * 100_000),
    "number ids": http_answer(json.dumps({"object": "list", "data": [{"id": 1e308}, {"id": None}, {}, 7]}).encode()),
    "not UTF-8": http_answer(b'{"data": "\xff\xfe"}'),
    "redirect": http_answer(b"", "302 Found", "Location: http://169.254.169.254/\r\n"),
}


@pytest.mark.parametrize("answer", GARBAGE.values(), ids=GARBAGE.keys())
def test_whatever_bytes_a_server_sends_verify_reports_them(raw_server, capsys, answer):
    server = raw_server(lambda _: answer)
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, "--requests", "1", "--timeout", "1")
    assert code == cli.EXIT_FAILED
    checks = by_check(result)
    assert checks["models"]["status"] == "FAIL" and checks["models"]["detail"]
    assert all(c.isprintable() for check in checks.values() for c in check["detail"]), "what the server sent, unescaped"
    assert "Traceback" not in capsys.readouterr().err


def test_control_bytes_a_server_sends_are_printed_escaped_on_one_line(double, raw_server, capsys):
    """A terminal's escape or a newline in an id or an error body would rewrite the operator's screen."""
    server = double(served=("\x1b[2Jevil\nmodel",))
    code = cli.main(["--url", server.url, "--model", MODEL, *FAST])
    out = capsys.readouterr().out
    assert code == cli.EXIT_FAILED and "\x1b" not in out
    assert "'llama-8b' not listed (listed: \\x1b[2Jevil\\nmodel)" in out
    body = b"HTTP/1.1 500 Oops\r\nContent-Length: 13\r\nConnection: close\r\n\r\nbad\x1b[31mthing"
    failing = raw_server(lambda _: body)
    code, result = run_json(capsys, "--url", failing.url, "--model", MODEL, "--requests", "1", "--timeout", "1")
    assert by_check(result)["models"]["detail"] == "HTTP 500: bad\\x1b[31mthing"


def test_ids_that_are_no_strings_are_counted_not_raised(double, capsys):
    server = double(served=(None, 7))
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, *FAST)
    assert code == cli.EXIT_FAILED
    assert by_check(result)["models"]["detail"] == "'llama-8b' not listed (listed: 2 id(s) that are no string)"
    beside = double(served=(None, 7, MODEL))
    assert run_json(capsys, "--url", beside.url, "--model", MODEL, *FAST)[0] == cli.EXIT_PASSED


@pytest.mark.parametrize(
    "message, passes",
    [
        (None, False),
        ({"role": "assistant", "content": None}, False),
        ({"role": "assistant", "content": ""}, False),
        ({"role": "assistant", "content": 7}, False),
        ({"role": "assistant", "content": None, "tool_calls": [None]}, False),
        ({"role": "assistant", "content": None, "tool_calls": [5]}, False),
        ({"role": "assistant", "content": None, "tool_calls": [{}]}, False),
        ({"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": ""}}]}, False),
        ({"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, True),
        ({"role": "assistant", "content": "OK"}, True),
    ],
    ids=["null message", "null content", "empty content", "number content", "null tool call", "number tool call",
         "empty tool call", "unnamed function", "tool call", "text"],
)
def test_a_completion_needs_text_or_a_tool_call(double, capsys, message, passes):
    server = double(message=message)
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, *FAST)
    assert (code == cli.EXIT_PASSED) is passes
    assert by_check(result)["completions"]["status"] == ("PASS" if passes else "FAIL")


def test_the_flags_reach_the_checks_by_name(monkeypatch, capsys):
    seen: list[verdicts.Options] = []
    monkeypatch.setattr(cli, "verify_target", lambda target, options, *kube: seen.append(options) or [])
    argv = ["--url", "http://127.0.0.1:8000", "--model", MODEL, "--wait-ready", "30", "--restart-window", "60"]
    assert cli.main([*argv, "--timeout", "7", "--requests", "3"]) == cli.EXIT_PASSED
    (options,) = seen
    assert (options.wait_ready, options.restart_window, options.timeout, options.requests) == (30, 60, 7, 3)
    assert options.wait_interval == verdicts.Options.wait_interval == 2.0, "the wait asks every two seconds"


def test_the_restart_window_counts_in_the_restarts_check(monkeypatch):
    windows = []
    monkeypatch.setattr(probe, "evaluate_restarts", lambda model, before, after, now, window: windows.append(window))

    class Pods:
        def pods(self, namespace: str, selector: str) -> list[Any]:
            return []

    probe._restarts_check(MODEL, "vllm", Pods(), "app=x", [], verdicts.Options(restart_window=60))  # type: ignore[arg-type]
    assert [w.total_seconds() for w in windows] == [60]


def test_the_wait_returns_as_soon_as_the_server_is_ready(double):
    server = double(loading_polls=3)
    polls = []

    def ready(left: float) -> Any:
        polls.append(left)
        return verdicts.models_problem(client.http_request(f"{server.url}/v1/models", left), MODEL)

    assert probe.wait_until(ready, 60, interval=0.01) is None
    assert len(polls) == 4, "three 503s, then the answer that lists the model"


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://127.0.0.1:99999", "--model", MODEL],
        ["--url", "http://127.0.0.1:0", "--model", MODEL],
        ["--url", "ftp://127.0.0.1:21", "--model", MODEL],
        ["--url", "http://", "--model", MODEL],
        ["--url", "http://[::1:8000", "--model", MODEL],
        ["--url", "http://a b:8000", "--model", MODEL],
        ["--url", "http://a..b:8000", "--model", MODEL],
    ],
    ids=["port beyond 65535", "port 0", "not http", "no host", "unclosed IPv6 host", "space in the host", "empty label"],
)
def test_a_malformed_url_is_a_usage_error(argv, capsys):
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--url" in err and "Traceback" not in err


def test_an_ipv6_url_closed_as_it_should_be_and_a_plain_name_are_targets() -> None:
    assert stack.target_from_url("http://[::1]:8000", MODEL).url == "http://[::1]:8000"
    assert stack.target_from_url("http://a.b:8000", MODEL).url == "http://a.b:8000"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_wait_that_is_not_a_finite_number_is_refused(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--url", "http://127.0.0.1:8000", "--model", MODEL, "--wait-ready", value])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "--wait-ready" in capsys.readouterr().err


# --- a model that cannot get a GPU node: Karpenter's reasons ---------------------------------------

KARPENTER_FAILED = {
    "reason": "FailedScheduling",
    "message": 'Failed to schedule pod, all available instance types exceed limits for nodepool: "gpu-p4d"',
    "lastTimestamp": "2025-06-01T12:00:30Z",
}
ICE = {
    "reason": "InsufficientCapacityError",
    "involvedObject": {"kind": "NodeClaim", "name": "gpu-p4d-x7k2q"},
    "message": "NodeClaim gpu-p4d-x7k2q event: all requested instance types were unavailable during launch",
    "count": 3,
    "lastTimestamp": "2025-06-01T12:00:10Z",
}
OTHER_POOLS_ICE = {**ICE, "involvedObject": {"kind": "NodeClaim", "name": "gpu-g5-ab12c"}, "count": 9}
SCHEDULER_SAYS = {"reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}


def test_karpenters_reasons_name_why_a_pod_waits_for_a_gpu_node() -> None:
    waiting = [pod("a", ready=False, unschedulable=True)]
    check = verdicts.evaluate_capacity(MODEL, waiting, [SCHEDULER_SAYS, KARPENTER_FAILED], [ICE, OTHER_POOLS_ICE], "gpu-p4d")
    assert not check.passed
    assert check.detail == (
        "1 pod(s) wait for a node of NodePool gpu-p4d (a); "
        'all available instance types exceed limits for nodepool: "gpu-p4d"; '
        "EC2 refused 3 launch(es) for capacity, the last: NodeClaim gpu-p4d-x7k2q event: all requested instance types "
        "were unavailable during launch"
    )
    quiet = verdicts.evaluate_capacity(MODEL, waiting, [SCHEDULER_SAYS], [OTHER_POOLS_ICE], "gpu-p4d")
    assert quiet.detail.endswith("Karpenter has said nothing yet")
    assert verdicts.evaluate_capacity(MODEL, [], [], [ICE], "gpu-p4d").passed


def test_verify_asks_karpenter_only_for_pods_that_wait_for_a_gpu_node() -> None:
    class WaitingForP4d(FakeKube):
        def deployment(self, namespace: str, name: str) -> dict[str, Any]:
            found = deployment(available=0)
            found["spec"]["template"] = {"spec": {"nodeSelector": {"node-type": "gpu", "gpu-pool": "p4d"}}}
            return found

        def events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
            self.asked.append((namespace, field_selector))
            return [KARPENTER_FAILED] if namespace == "vllm" else [ICE]

    kube = WaitingForP4d({}, [pod("a", ready=False, unschedulable=True), pod("b")])
    kube.asked = []
    checks, _, _ = probe._workload_checks(MODEL, "vllm", kube)  # type: ignore[arg-type]
    capacity = {c.check: c for c in checks}["capacity"]
    assert not capacity.passed and "exceed limits for nodepool" in capacity.detail and "EC2 refused 3" in capacity.detail
    assert kube.asked == [("vllm", "involvedObject.name=a"), ("default", "reason=InsufficientCapacityError")]
    served = WaitingForP4d({}, [pod("a"), pod("b")])
    served.asked = []
    assert "capacity" not in {c.check for c in probe._workload_checks(MODEL, "vllm", served)[0]}
    assert served.asked == []


def test_a_host_that_cannot_be_reached_says_so_and_not_that_it_timed_out() -> None:
    """urllib3's NewConnectionError (a name that does not resolve) is also a ConnectTimeoutError."""
    unresolved = OSError("[Errno -2] Name or service not known")
    error = client.urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection")  # type: ignore[arg-type]
    error.__cause__ = unresolved
    assert client._reason(error, 3.0, deadline_passed=False) == "cannot connect: [Errno -2] Name or service not known"
    timed_out = client.urllib3.exceptions.ConnectTimeoutError(None, "timed out")
    assert client._reason(timed_out, 3.0, deadline_passed=False) == "timed out after 3 s"
