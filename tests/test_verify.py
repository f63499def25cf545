"""tools.verify against vLLM-API test doubles on loopback, and its Kubernetes evaluation on API-shaped dicts."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import http.server
import json
import os
import re
import socket
import stat
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import yaml

from tests.conftest import minimal_document
from tools.verify import checks as verdicts
from tools.verify import cli, client, probe, report, stack
from tools.verify import kube as kubeapi

MODEL = "llama-8b"
EXISTING_EXAMPLE = Path(__file__).parent / "data" / "existing-cluster.yaml"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
# Few requests, tiny delays and SLO: the slow variant has to be slow without the suite being so.
FAST = ["--requests", "4", "--concurrency", "4", "--timeout", "2"]
# How long a double holds a request for what it stands in for (a wake, an overlap): a bound, not a speed.
HELD_AT_MOST = 10.0


class VllmDouble(http.server.ThreadingHTTPServer):
    """The slice of vLLM's OpenAI server that verify talks to; each keyword makes one failure mode."""

    daemon_threads = True

    def __init__(
        self,
        served: tuple[str, ...] = (MODEL,),
        chat_status: int = 200,
        chat_delay: float = 0.0,
        loading_polls: int = 0,
        routed_host: Optional[str] = None,
        drop_reused: int = 0,
        health_status: int = 200,
        wake_delay: float = 0.0,
        overlap: int = 0,
        message: Any = {"role": "assistant", "content": "OK"},
    ):
        super().__init__(("127.0.0.1", 0), _VllmHandler)
        self.served = served
        self.chat_status = chat_status
        self.chat_delay = chat_delay
        self.loading_polls = loading_polls  # /v1/models answers 503 this many times first
        # Set: an interceptor in front, which answers 404 to a Host that routes to no model.
        self.routed_host = routed_host
        # This many completions that arrive on a kept-alive connection get it closed instead of an answer,
        # as when the server's keep-alive timeout races the request.
        self.drop_reused = drop_reused
        self.health_status = health_status
        self.message = message  # what each completion's choice carries as its message
        # An interceptor holds the first /v1/models request, silent, for this long while the model it wakes starts
        # (any that come meanwhile wait for the same wake): counted from the request, never from the server's start,
        # so a slow machine cannot let the first request arrive after the wake.
        self.wake_delay = wake_delay
        self.awake = threading.Event()
        if wake_delay <= 0:
            self.awake.set()
        self.held = 0
        # Completions wait, up to HELD_AT_MOST, until this many are in flight at once (once): a client that sends
        # them together is seen doing so whatever the machine's speed; one that sends them in turn is not.
        self.overlap = overlap
        self.hosts_seen: set[str] = set()
        self.chat_requests: list[dict[str, Any]] = []
        self.connections = 0
        self.in_flight = self.peak_in_flight = 0
        self.lock = threading.Lock()
        self.overlapped = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has hung up before the slow variants answer; that is the point of them.
        pass


class _VllmHandler(http.server.BaseHTTPRequestHandler):
    server: VllmDouble
    # Keep-alive, as vLLM's uvicorn does: verify reuses one connection for a worker's completions.
    protocol_version = "HTTP/1.1"
    # Like uvicorn (asyncio sets TCP_NODELAY): otherwise a kept-alive answer's body waits for a delayed ACK.
    disable_nagle_algorithm = True
    answered = 0  # requests answered on this connection

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, document: Optional[dict[str, Any]] = None) -> None:
        body = json.dumps(document).encode() if document is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.answered += 1

    def _unrouted(self) -> bool:
        host = self.headers.get("Host", "").rsplit(":", 1)[0]
        self.server.hosts_seen.add(host)
        if self.server.routed_host is not None and host != self.server.routed_host:
            self._reply(404, {"message": f"no route for host {host}"})
            return True
        return False

    def do_GET(self) -> None:
        if self._unrouted():
            return
        if self.path == "/health":
            self._reply(self.server.health_status)
        elif self.path == "/v1/models":
            if not self.server.awake.is_set():
                with self.server.lock:
                    self.server.held += 1
                    waking = self.server.held == 1
                if waking:
                    time.sleep(self.server.wake_delay)
                    self.server.awake.set()
                self.server.awake.wait(HELD_AT_MOST)
            if self.server.loading_polls > 0:
                self.server.loading_polls -= 1
                self._reply(503, {"object": "error", "message": "loading"})
                return
            models = [{"id": name, "object": "model", "owned_by": "vllm", "root": name} for name in self.server.served]
            self._reply(200, {"object": "list", "data": models})
        else:
            self._reply(404)

    def do_POST(self) -> None:
        if self._unrouted():
            return
        self._complete(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

    def _complete(self, request: dict[str, Any]) -> None:
        """Answer a chat completion whose body has been read."""
        with self.server.lock:
            dropped = self.answered > 0 and self.server.drop_reused > 0
            self.server.drop_reused -= dropped
        if dropped:
            self.close_connection = True
            return
        self.server.chat_requests.append(request)
        with self.server.overlapped:
            self.server.in_flight += 1
            self.server.peak_in_flight = max(self.server.peak_in_flight, self.server.in_flight)
            self.server.overlapped.notify_all()
            if not self.server.overlapped.wait_for(lambda: self.server.peak_in_flight >= self.server.overlap, HELD_AT_MOST):
                self.server.overlap = 0  # they came in turn: the test fails on the peak, without waiting again
        time.sleep(self.server.chat_delay)
        with self.server.lock:
            self.server.in_flight -= 1
        if self.server.chat_status != 200:
            self._reply(self.server.chat_status, {"object": "error", "message": "engine failure", "code": 500})
            return
        self._reply(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": request["model"],
                "choices": [{"index": 0, "message": self.server.message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
            },
        )


def serving(factory: Callable[..., Any]) -> Iterator[Any]:
    """A fixture's `start(**variant)`: each server it makes serves on loopback until the test ends."""
    servers: list[Any] = []

    def start(**variant: Any) -> Any:
        server = factory(**variant)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def double() -> Iterator[Any]:
    yield from serving(VllmDouble)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A port that is taken but not listening: connecting is refused, like a pod still loading its model."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{reserved.getsockname()[1]}"


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def by_check(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in result["checks"]}


def test_healthy_endpoint_passes_every_check(double, capsys):
    server = double()
    code = cli.main(["--url", server.url, "--model", MODEL, *FAST])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_PASSED
    rows = [line.split()[:3] for line in out.splitlines()[1:-1]]
    assert rows == [[MODEL, name, "PASS"] for name in ("health", "models", "completions", "latency-p95")]
    assert out.splitlines()[-1] == "PASS: all 4 checks passed"
    assert "verify: " in err and "verify: " not in out
    assert len(server.chat_requests) == 4
    assert server.chat_requests[0]["model"] == MODEL and server.chat_requests[0]["max_tokens"] == probe.MAX_TOKENS


def test_completions_run_at_bounded_concurrency_on_kept_alive_connections(double, capsys):
    server = double(overlap=3)
    code = cli.main(["--url", server.url, "--model", MODEL, "--requests", "9", "--concurrency", "3"])
    assert code == cli.EXIT_PASSED, capsys.readouterr().out
    assert len(server.chat_requests) == 9
    assert server.peak_in_flight == 3, "three at once, and never more"
    assert server.connections == 2 + 3, "/health, /v1/models, then one connection per worker"


def test_a_kept_alive_connection_closed_by_the_server_is_reopened_once(double):
    server = double(drop_reused=1)
    responses = probe.chat_completions([server.url], MODEL, verdicts.Options(requests=2, concurrency=1, timeout=2))
    assert server.drop_reused == 0, "the double closed a kept-alive connection on a completion"
    assert [verdicts.completion_problem(r) for r in responses] == [None, None]
    assert server.connections == 2


def test_not_listening_fails_with_connection_refused(refused_url, capsys):
    code, result = run_json(capsys, "--url", refused_url, "--model", MODEL, *FAST)
    checks = by_check(result)
    assert code == cli.EXIT_FAILED and result["passed"] is False
    assert checks["health"]["status"] == "FAIL" and checks["health"]["detail"] == "connection refused"
    assert checks["models"]["status"] == "FAIL" and checks["models"]["detail"] == "connection refused"
    assert checks["completions"]["status"] == "FAIL" and checks["completions"]["detail"].startswith("skipped")


def test_model_not_listed_fails_the_models_check(double, capsys):
    server = double(served=("some-other-model",))
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, *FAST)
    checks = by_check(result)
    assert code == cli.EXIT_FAILED
    assert checks["health"]["status"] == "PASS"
    assert checks["models"]["status"] == "FAIL"
    assert checks["models"]["detail"] == "'llama-8b' not listed (listed: some-other-model)"
    assert checks["latency-p95"]["status"] == "FAIL"
    assert server.chat_requests == []


def test_slow_completions_fail_the_p95_slo(double, capsys):
    server = double(chat_delay=0.1)
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, *FAST, "--p95-slo", "0.05")
    checks = by_check(result)
    assert code == cli.EXIT_FAILED
    assert checks["completions"]["status"] == "PASS"
    latency = checks["latency-p95"]
    assert latency["status"] == "FAIL"
    assert latency["data"]["p95Seconds"] >= 0.1 and latency["data"]["p95SloSeconds"] == 0.05
    assert "SLO p95 <= 0.05 s" in latency["detail"]


def test_server_errors_fail_the_completions_check(double, capsys):
    server = double(chat_status=500)
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, *FAST)
    checks = by_check(result)
    assert code == cli.EXIT_FAILED
    assert checks["health"]["status"] == "PASS" and checks["models"]["status"] == "PASS"
    assert checks["completions"]["status"] == "FAIL"
    assert checks["completions"]["detail"].startswith("4/4 failed: HTTP 500")
    assert checks["latency-p95"]["detail"] == "no successful completion to measure"
    assert checks["latency-p95"]["data"]["errors"] == 4


def test_request_timeouts_are_reported_not_raised(double, capsys):
    server = double(chat_delay=0.5)
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, "--requests", "2", "--timeout", "0.1")
    assert code == cli.EXIT_FAILED
    assert by_check(result)["completions"]["detail"] == "2/2 failed: timed out after 0.1 s x2"


def test_json_output_shape(double, capsys):
    server = double()
    code, result = run_json(capsys, "--url", server.url, "--model", MODEL, *FAST)
    assert code == 0
    assert set(result) == {"passed", "checks"} and result["passed"] is True
    for check in result["checks"]:
        assert set(check) == {"model", "check", "status", "detail", "data"}
    latency = by_check(result)["latency-p95"]["data"]
    assert set(latency) == {"requests", "errors", "p95SloSeconds", "p50Seconds", "p95Seconds", "maxSeconds"}
    assert latency["requests"] == 4 and latency["errors"] == 0
    assert latency["p50Seconds"] <= latency["p95Seconds"] <= latency["maxSeconds"]


def test_wait_ready_waits_for_the_model_to_load(double, capsys):
    server = double(loading_polls=2)
    options = verdicts.Options(requests=1, timeout=2, wait_ready=5, wait_interval=0.01)
    checks = probe.verify_target(verdicts.Target(MODEL, MODEL, server.url), options)
    assert server.loading_polls == 0
    assert all(c.passed for c in checks)
    assert "still not ready" not in capsys.readouterr().err


class SteppedClock:
    """`time` for the code under test: it moves only when slept, so a count of polls never depends on the machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_until_gives_up_at_the_deadline(monkeypatch):
    monkeypatch.setattr(probe, "time", SteppedClock())
    polls = []

    def refused(left: float) -> Optional[str]:
        polls.append(left)
        return "connection refused"

    assert probe.wait_until(refused, 4, interval=1) == "connection refused"
    # One poll at the start, one per interval, and one at the deadline with what is left of it (at least 1 ms).
    assert polls == [4, 3, 2, 1, 0.001]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--url", "http://127.0.0.1:1"],
        ["--stack", "dev", "--model", MODEL],
        ["--url", "http://127.0.0.1:1", "--stack", "dev"],
        ["--url", "http://127.0.0.1:1", "--model", MODEL, "--requests", "0"],
        ["--url", "http://127.0.0.1:1", "--model", MODEL, "--p95-slo", "-1"],
    ],
)
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == cli.EXIT_USAGE


def test_stack_without_the_pulumi_cli_is_a_clear_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["--stack", "dev"]) == cli.EXIT_USAGE
    assert "the pulumi CLI is not on PATH" in capsys.readouterr().err


def test_kubernetes_checks_need_a_service_url(capsys):
    code = cli.main(["--url", "http://127.0.0.1:8000", "--model", MODEL, "--kubeconfig", "/nonexistent"])
    assert code == cli.EXIT_USAGE
    assert "Service URL" in capsys.readouterr().err


def test_unreadable_kubeconfig_is_a_failed_check(tmp_path, capsys):
    url = "http://llama-8b.vllm.svc.cluster.local:8000"
    code, result = run_json(capsys, "--url", url, "--model", MODEL, "--kubeconfig", str(tmp_path / "missing"))
    assert code == cli.EXIT_FAILED
    assert [(c["check"], c["status"]) for c in result["checks"]] == [("kubeconfig", "FAIL")]


def test_targets_from_stack_outputs():
    outputs = {
        "namespace": "vllm",
        "models": {
            "qwen": {
                "serviceUrl": "http://qwen.vllm.svc.cluster.local:8000",
                "servedModelName": "qwen-7b",
                "port": 8000,
            },
            "llama-8b": {
                "serviceUrl": "http://llama-8b.vllm.svc.cluster.local:8000",
                "servedModelName": MODEL,
                "port": 8000,
            },
        },
    }
    assert stack.targets_from_outputs(outputs) == [
        verdicts.Target("llama-8b", MODEL, "http://llama-8b.vllm.svc.cluster.local:8000", "vllm"),
        verdicts.Target("qwen", "qwen-7b", "http://qwen.vllm.svc.cluster.local:8000", "vllm"),
    ]
    with pytest.raises(verdicts.UsageError):
        stack.targets_from_outputs({"namespace": "vllm"})


def test_target_from_a_service_url_names_deployment_and_namespace():
    assert stack.target_from_url("http://llama-8b.vllm.svc.cluster.local:8000", "served") == verdicts.Target(
        "llama-8b", "served", "http://llama-8b.vllm.svc.cluster.local:8000", "vllm"
    )
    assert stack.target_from_url("http://127.0.0.1:8000", "served").namespace is None
    with pytest.raises(verdicts.UsageError):
        stack.target_from_url("ftp://example.com", "served")


def test_stack_kubeconfig_goes_to_a_private_temporary_file():
    with stack.kubeconfig_file({"apiVersion": "v1", "kind": "Config"}) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert json.loads(open(path).read())["kind"] == "Config"
    with pytest.raises(FileNotFoundError):
        open(path)


def test_table_has_one_aligned_row_per_check_and_a_verdict():
    checks = [
        verdicts.Check("llama-8b", "health", True, "HTTP 200 in 0.010 s"),
        verdicts.Check("qwen", "latency-p95", False, "p50 1.000 s, p95 4.000 s, max 5.000 s (SLO p95 <= 3 s)"),
    ]
    assert report.render_table(checks).splitlines() == [
        "MODEL     CHECK        STATUS  DETAIL",
        "llama-8b  health       PASS    HTTP 200 in 0.010 s",
        "qwen      latency-p95  FAIL    p50 1.000 s, p95 4.000 s, max 5.000 s (SLO p95 <= 3 s)",
        "FAIL: 1 of 2 checks failed",
    ]


@pytest.mark.parametrize(
    "values, pct, expected",
    [
        ([5.0], 95, 5.0),
        ([3.0, 1.0, 2.0], 50, 2.0),
        (list(range(1, 21)), 95, 19),
        (list(range(1, 21)), 100, 20),
        ([1.0, 2.0], 0, 1.0),
    ],
)
def test_percentile_is_nearest_rank(values, pct, expected):
    assert verdicts.percentile(values, pct) == expected


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        verdicts.percentile([], 95)


def _completion(elapsed: float) -> client.Response:
    return client.Response(200, json.dumps({"choices": [{"message": {"content": "OK"}}]}).encode(), elapsed)


def test_evaluate_completions_counts_errors_and_measures_only_successes():
    responses = [
        _completion(0.1),
        _completion(0.3),
        client.Response(200, b'{"object": "list"}', 0.01),
        client.Response(None, b"", 2.0, "connection refused"),
    ]
    completions, latency = verdicts.evaluate_completions(MODEL, responses, p95_slo=0.5)
    assert not completions.passed
    assert completions.detail == "2/4 failed: HTTP 200 without a chat completion x1; connection refused x1"
    assert latency.passed and latency.data["p95Seconds"] == 0.3 and latency.data["maxSeconds"] == 0.3


def deployment(
    replicas: int = 2, available: int = 2, updated: int = 2, progressing: Optional[dict[str, str]] = None
) -> dict[str, Any]:
    conditions = [{"type": "Progressing", **(progressing or {"status": "True", "reason": "NewReplicaSetAvailable"})}]
    return {
        "metadata": {"name": MODEL, "namespace": "vllm"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": MODEL}},
        },
        "status": {"availableReplicas": available, "updatedReplicas": updated, "conditions": conditions},
    }


def pod(
    name: str,
    ready: bool = True,
    restarts: int = 0,
    finished_at: Optional[str] = None,
    waiting: Optional[str] = None,
    terminating: bool = False,
    unschedulable: bool = False,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "vllm", "ready": ready, "restartCount": restarts, "state": {"running": {}}}
    if waiting:
        container["state"] = {"waiting": {"reason": waiting}}
    if finished_at:
        container["lastState"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": finished_at}}
    conditions = [
        {"type": "Ready", "status": "True" if ready else "False", "reason": None if ready else "ContainersNotReady"}
    ]
    status: dict[str, Any] = {"phase": "Running", "conditions": conditions, "containerStatuses": [container]}
    if unschedulable:
        message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        status = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
        }
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/instance": MODEL}}
    if terminating:
        metadata["deletionTimestamp"] = "2025-06-01T11:59:00Z"
    spec = {"containers": [{"name": "vllm", "ports": [{"name": "http", "containerPort": 8000}]}]}
    return {"metadata": metadata, "spec": spec, "status": status}


def service() -> dict[str, Any]:
    return {
        "metadata": {"name": MODEL, "namespace": "vllm"},
        "spec": {
            "selector": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": MODEL},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }


@pytest.mark.parametrize(
    "kwargs, passed, detail",
    [
        ({}, True, "2/2 available, 2 updated"),
        ({"available": 1}, False, "1/2 available, 2 updated"),
        ({"updated": 1}, False, "2/2 available, 1 updated; rollout still in progress"),
        (
            {"replicas": 0, "available": 0, "updated": 0},
            False,
            "0/0 available, 0 updated; scaled to zero, nothing serves",
        ),
        (
            {
                "available": 0,
                "progressing": {"status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"},
            },
            False,
            "0/2 available, 2 updated; ProgressDeadlineExceeded: timed out",
        ),
    ],
)
def test_evaluate_deployment(kwargs, passed, detail):
    check = verdicts.evaluate_deployment(MODEL, deployment(**kwargs))
    assert (check.check, check.passed, check.detail) == ("deployment", passed, detail)


def test_evaluate_pods_names_what_keeps_each_pod_from_ready():
    pods = [
        pod("a"),
        pod("b", ready=False, waiting="CrashLoopBackOff"),
        pod("c", ready=False, unschedulable=True),
        pod("d", ready=False, terminating=True),
    ]
    check = verdicts.evaluate_pods(MODEL, pods)
    assert not check.passed
    assert check.detail == (
        "1/3 Ready; b: vllm CrashLoopBackOff, "
        "c: Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )
    assert verdicts.evaluate_pods(MODEL, [pod("a"), pod("d", ready=False, terminating=True)]).detail == "1/1 Ready"
    assert verdicts.evaluate_pods(MODEL, []).detail == "no pods"


@pytest.mark.parametrize(
    "before, after, passed, detail",
    [
        ([pod("a")], [pod("a")], True, "none in the last 60m"),
        ([], [pod("a", restarts=3, finished_at="2025-06-01T10:00:00Z")], True, "none in the last 60m (3 older)"),
        (
            [],
            [pod("a", restarts=1, finished_at="2025-06-01T11:30:00Z")],
            False,
            "a/vllm restarted at 2025-06-01T11:30:00Z (OOMKilled, exit 137); restart count 1",
        ),
        (
            [pod("a", restarts=3, finished_at="2025-06-01T10:00:00Z")],
            [pod("a", restarts=4, finished_at="2025-06-01T10:00:00Z")],
            False,
            "a/vllm restarted during verification (3 -> 4; OOMKilled, exit 137)",
        ),
        ([pod("a"), pod("b")], [pod("a")], False, "b went away during verification"),
    ],
)
def test_evaluate_restarts(before, after, passed, detail):
    check = verdicts.evaluate_restarts(MODEL, before, after, NOW, HOUR)
    assert (check.check, check.passed, check.detail) == ("restarts", passed, detail)


def test_forward_targets_resolve_the_named_port_on_every_ready_pod():
    pods = [pod("a", ready=False), pod("b", terminating=True), pod("c"), pod("d")]
    assert kubeapi.forward_targets(service(), pods) == [("c", 8000), ("d", 8000)]
    with pytest.raises(kubeapi.KubeError, match="no Ready pod"):
        kubeapi.forward_targets(service(), [pod("a", ready=False)])


def stream_to(port: int) -> socket.socket:
    """A loopback connection standing in for the client's port-forward socket, which has no Nagle delay either."""
    stream = socket.create_connection(("127.0.0.1", port))
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return stream


class FakeKube:
    """The API reads verify makes, and port-forwards to the pods' test doubles (pod name -> URL)."""

    def __init__(
        self,
        upstreams: dict[str, str],
        pods: list[dict[str, Any]],
        pods_later: Optional[list[dict[str, Any]]] = None,
        on_stream: Callable[[], None] = lambda: None,
    ):
        self.ports = {name: int(url.rsplit(":", 1)[1]) for name, url in upstreams.items()}
        self._pods = [pods, pods_later or pods]
        self.on_stream = on_stream  # what opening a port-forward's websocket does besides
        self.streams = 0
        self.selectors: list[str] = []

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        if name != MODEL:
            raise kubeapi.KubeError(f"reading Deployment {namespace}/{name}: HTTP 404 Not Found")
        return deployment()

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        return service()

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.selectors.append(selector)
        # The first listings are before the load; the last one, for restarts, after it.
        return self._pods[0] if len(self.selectors) < 3 else self._pods[1]

    def open_stream(self, namespace: str, pod_name: str, port: int) -> socket.socket:
        assert (namespace, port) == ("vllm", 8000)
        self.streams += 1
        self.on_stream()
        return stream_to(self.ports[pod_name])


def test_kubernetes_checks_reach_the_model_through_the_port_forward(double):
    server = double()
    kube = FakeKube({"a": server.url}, [pod("a")])
    target = verdicts.Target(MODEL, MODEL, f"http://{MODEL}.vllm.svc.cluster.local:8000", "vllm")
    checks = probe.verify_target(target, verdicts.Options(requests=3, concurrency=2, timeout=2), kube)
    assert [(c.check, c.status) for c in checks] == [
        ("deployment", "PASS"),
        ("pods-ready", "PASS"),
        ("port-forward", "PASS"),
        ("health", "PASS"),
        ("models", "PASS"),
        ("completions", "PASS"),
        ("latency-p95", "PASS"),
        ("restarts", "PASS"),
    ]
    assert kube.streams == 4  # one stream per HTTP connection: /health, /v1/models, one per completions worker
    assert set(kube.selectors) == {"app.kubernetes.io/instance=llama-8b,app.kubernetes.io/name=vllm"}


class SkewedClock:
    """verify's client clock, which each port-forward setup moves on by an hour: a latency that counted a setup
    would show that hour, whatever the machine's load, and one that did not stays far below it."""

    SETUP_SECONDS = 3600.0

    def __init__(self) -> None:
        self.skew = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skew

    def stream_opened(self) -> None:
        self.skew += self.SETUP_SECONDS


def test_neither_the_port_forward_setup_nor_the_relay_adds_latency(double, monkeypatch):
    server = double()
    clock = SkewedClock()
    monkeypatch.setattr(client, "time", clock)
    kube = FakeKube({"a": server.url}, [pod("a")], on_stream=clock.stream_opened)
    target = verdicts.Target(MODEL, MODEL, "unused", "vllm")
    # One worker: the clock is shared, and a second worker's setup would land inside the first one's timed request.
    options = verdicts.Options(requests=4, concurrency=1, timeout=2, p95_slo=SkewedClock.SETUP_SECONDS / 2)
    latency = {c.check: c for c in probe.verify_target(target, options, kube)}["latency-p95"]
    assert kube.streams >= 2 and clock.skew == kube.streams * SkewedClock.SETUP_SECONDS, "the setups happened"
    assert latency.passed, latency.detail


def test_health_and_models_are_checked_on_every_ready_pod(double):
    healthy, broken = double(), double(health_status=503, served=())
    kube = FakeKube({"a": healthy.url, "b": broken.url}, [pod("a"), pod("b")])
    target = verdicts.Target(MODEL, MODEL, "unused", "vllm")
    checks = {c.check: c for c in probe.verify_target(target, verdicts.Options(requests=4, timeout=2), kube)}
    assert checks["port-forward"].detail == "via pods a:8000, b:8000"
    assert not checks["health"].passed
    assert checks["health"].detail == "1/2 pods answered 200; b: HTTP 503"
    assert not checks["models"].passed
    assert checks["models"].detail == "1/2 pods listed 'llama-8b'; b: 'llama-8b' not listed (listed: none)"
    assert checks["completions"].passed, "the completions go to the pod that serves the model"
    assert len(healthy.chat_requests) == 4 and broken.chat_requests == []


def test_kubernetes_checks_catch_a_restart_during_the_load(double):
    server = double()
    kube = FakeKube({"a": server.url}, [pod("a")], [pod("a", restarts=1, finished_at="2025-06-01T11:59:59Z")])
    target = verdicts.Target(MODEL, MODEL, "unused", "vllm")
    restarts = probe.verify_target(target, verdicts.Options(requests=1, timeout=2), kube)[-1]
    assert (restarts.check, restarts.passed) == ("restarts", False)
    assert "restarted during verification (0 -> 1" in restarts.detail


def test_kubernetes_api_errors_become_failed_checks(double):
    server = double()
    kube = FakeKube({"a": server.url}, [pod("a")])
    target = verdicts.Target("missing", MODEL, "unused", "vllm")
    checks = probe.verify_target(target, verdicts.Options(requests=1, timeout=2), kube)
    assert (checks[0].check, checks[0].status) == ("deployment", "FAIL")
    assert checks[0].detail == "reading Deployment vllm/missing: HTTP 404 Not Found"


INTERCEPTOR = "keda-add-ons-http-interceptor-proxy"


class FakeKubeAtZero(FakeKube):
    """A model that scales to zero: its Service aliases the interceptor, which is what gets port-forwarded."""

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) == ("vllm", MODEL):
            return {
                "metadata": {"name": MODEL, "namespace": "vllm"},
                "spec": {
                    "type": "ExternalName",
                    "externalName": f"{INTERCEPTOR}.keda.svc.cluster.local",
                    "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
                },
            }
        assert (namespace, name) == ("keda", INTERCEPTOR)
        return {
            "metadata": {"name": INTERCEPTOR, "namespace": "keda"},
            "spec": {
                "selector": {"app.kubernetes.io/component": "interceptor"},
                "ports": [{"name": "proxy", "port": 8000, "targetPort": "proxy"}],
            },
        }

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        if namespace == "keda":
            interceptor = pod("interceptor-1")
            interceptor["spec"]["containers"][0]["ports"] = [{"name": "proxy", "containerPort": 8000}]
            return [interceptor]
        return super().pods(namespace, selector)

    def open_stream(self, namespace: str, pod_name: str, port: int) -> socket.socket:
        assert (namespace, port) == ("keda", 8000)
        self.streams += 1
        return stream_to(self.ports[pod_name])


AT_ZERO_HOST = f"{MODEL}.vllm.svc.cluster.local"


def model_at_zero(double, **behaviour):
    """An interceptor double routing the model's Host, the cluster around it, and the model's target."""
    interceptor = double(routed_host=AT_ZERO_HOST, **behaviour)
    kube = FakeKubeAtZero({"interceptor-1": interceptor.url}, [pod("a")])
    return interceptor, kube, verdicts.Target(MODEL, MODEL, f"http://{AT_ZERO_HOST}:8000", "vllm")


def test_a_model_at_zero_is_woken_and_checked_through_the_interceptor(double):
    host = AT_ZERO_HOST
    interceptor, kube, target = model_at_zero(double, loading_polls=2)
    options = verdicts.Options(requests=2, concurrency=2, timeout=2, wait_interval=0.01)
    checks = probe.verify_target(target, options, kube)
    assert [(c.check, c.status) for c in checks] == [
        ("port-forward", "PASS"),
        ("deployment", "PASS"),
        ("pods-ready", "PASS"),
        ("health", "PASS"),
        ("models", "PASS"),
        ("completions", "PASS"),
        ("latency-p95", "PASS"),
        ("restarts", "PASS"),
    ]
    assert "interceptor pod keda/interceptor-1" in checks[0].detail
    assert interceptor.loading_polls == 0, "verify waited for the wake-up without --wait-ready"
    assert interceptor.hosts_seen == {host}, "every request names the model's Service as its Host"


def test_the_forward_keeps_a_waking_request_open_as_long_as_the_wake_may_take(double):
    interceptor, kube, target = model_at_zero(double, wake_delay=0.6)
    options = verdicts.Options(requests=1, timeout=0.2, wait_ready=5, wait_interval=0.01)
    checks = probe.verify_target(target, options, kube)
    assert all(c.passed for c in checks), checks
    assert interceptor.held == 1, "the request that woke the model was answered, not dropped and sent again"


def test_a_wrong_host_at_the_interceptor_fails_the_checks(double):
    interceptor = double(routed_host="someone-else.vllm.svc.cluster.local")
    kube = FakeKubeAtZero({"interceptor-1": interceptor.url}, [pod("a")])
    target = verdicts.Target(MODEL, MODEL, "unused", "vllm")
    options = verdicts.Options(requests=1, timeout=1, wait_ready=0.2, wait_interval=0.05)
    checks = {c.check: c for c in probe.verify_target(target, options, kube)}
    assert not checks["health"].passed and checks["health"].detail.startswith("HTTP 404")
    assert not checks["models"].passed


class FakeApiServer(http.server.ThreadingHTTPServer):
    """A loopback Kubernetes API: GETs of the objects given, and pods' port-forwards over websockets to
    the test doubles in `backends` (pod name -> URL), framed as the API server frames them for the client."""

    daemon_threads = True

    def __init__(self, objects: dict[str, Any]):
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.objects = objects
        self.backends: dict[str, str] = {}
        self.port_forwards: list[str] = []
        self.handshake_seconds = 0.0
        self.handshaking = self.peak_handshaking = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


PORT_FORWARD = re.compile(r"^/api/v1/namespaces/vllm/pods/(?P<pod>[^/]+)/portforward\?ports=(?P<port>\d+)$")


class _ApiHandler(http.server.BaseHTTPRequestHandler):
    server: FakeApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer t":
            self._reply(401, b'{"kind": "Status", "code": 401}')
            return
        forward = PORT_FORWARD.match(self.path)
        if forward and self.headers.get("Upgrade", "").lower() == "websocket":
            self._port_forward(forward["pod"], int(forward["port"]))
            return
        found = self.server.objects.get(self.path.split("?")[0])
        if callable(found):
            found(self)  # an answer that misbehaves on the wire, written by the test
            return
        if isinstance(found, bytes):
            body = found  # not an API object: what a proxy in front of the API server might answer
        else:
            status = {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
            body = json.dumps(found or status).encode()
        self._reply(200 if found else 404, body)

    def _port_forward(self, pod_name: str, port: int) -> None:
        self.server.port_forwards.append(pod_name)
        if pod_name not in self.server.backends:
            self._reply(403, b'{"kind": "Status", "message": "pods/portforward is forbidden", "code": 403}')
            return
        with self.server.lock:
            self.server.handshaking += 1
            self.server.peak_handshaking = max(self.server.peak_handshaking, self.server.handshaking)
        time.sleep(self.server.handshake_seconds)
        with self.server.lock:
            self.server.handshaking -= 1
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        self.close_connection = True
        # Each channel's first frame names its port: channel 0 carries the data, channel 1 errors.
        for channel in (0, 1):
            self.wfile.write(ws_frame(bytes([channel]) + port.to_bytes(2, "little")))
        backend = stream_to(int(self.server.backends[pod_name].rsplit(":", 1)[1]))

        def from_backend() -> None:
            with contextlib.suppress(OSError):
                while data := backend.recv(65536):
                    self.wfile.write(ws_frame(b"\0" + data))
                self.wfile.write(ws_frame(b"", opcode=0x8))

        answering = threading.Thread(target=from_backend, daemon=True)
        answering.start()
        try:
            while True:
                opcode, data = read_ws_frame(self.rfile)
                if opcode == 0x8:
                    break
                if opcode == 0x2 and data[:1] == b"\0":
                    backend.sendall(data[1:])
        except OSError:
            pass
        finally:
            backend.shutdown(socket.SHUT_RDWR)
            answering.join()
            backend.close()


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One unmasked websocket frame, as a server sends them."""
    size = len(payload)
    if size < 126:
        length = bytes([size])
    elif size < 1 << 16:
        length = bytes([126]) + size.to_bytes(2, "big")
    else:
        length = bytes([127]) + size.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + length + payload


def read_ws_frame(stream: Any) -> tuple[int, bytes]:
    """One websocket frame from a client (masked); a closed stream reads as a close frame."""
    head = stream.read(2)
    if len(head) < 2:
        return 0x8, b""
    size = head[1] & 0x7F
    if size >= 126:
        size = int.from_bytes(stream.read(2 if size == 126 else 8), "big")
    mask = stream.read(4) if head[1] & 0x80 else bytes(4)
    data = stream.read(size)
    return head[0] & 0x0F, bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))


def kubeconfig_for(server: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }


def verify_through_api(api_server: "FakeApiServer", tmp_path: Path, capsys: Any) -> tuple[int, dict[str, Any]]:
    """verify's exit code and JSON for the model's Service URL, through the stand-in API server's kubeconfig."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(api_server.url)))
    url = f"http://{MODEL}.vllm.svc.cluster.local:8000"
    return run_json(capsys, "--url", url, "--model", MODEL, "--kubeconfig", str(kubeconfig), "--timeout", "2")


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    """A loopback Kubernetes API serving one model's Deployment, Service and pod; set `backends` to port-forward."""
    server = FakeApiServer(
        {
            f"/apis/apps/v1/namespaces/vllm/deployments/{MODEL}": deployment(),
            f"/api/v1/namespaces/vllm/services/{MODEL}": service(),
            "/api/v1/namespaces/vllm/pods": {"kind": "PodList", "items": [pod("a")]},
            "/api/v1/namespaces/vllm/services/behind-a-proxy": b"<html><body>502 Bad Gateway</body></html>",
        }
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_kube_api_reads_plain_api_json_through_the_kubernetes_client(api_server, tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(api_server.url)))
    kube = kubeapi.KubeApi(str(kubeconfig), None, timeout=2)
    assert kube.deployment("vllm", MODEL) == deployment()
    assert kube.pods("vllm", "app.kubernetes.io/instance=llama-8b") == [pod("a")]
    with pytest.raises(kubeapi.KubeError, match=r"reading Deployment vllm/other: HTTP 404"):
        kube.deployment("vllm", "other")


def test_port_forwards_through_the_kubernetes_client_reach_every_pod(api_server, double, tmp_path, capsys):
    """The client's websocket port-forward, the local forwards and their relays together, to two pods."""
    first, second = double(), double()
    api_server.backends = {"a": first.url, "b": second.url}
    api_server.handshake_seconds = 0.05  # long enough for the two workers' port-forwards to overlap
    api_server.objects["/api/v1/namespaces/vllm/pods"] = {"kind": "PodList", "items": [pod("a"), pod("b")]}
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(api_server.url)))
    url = f"http://{MODEL}.vllm.svc.cluster.local:8000"
    argv = ["--url", url, "--model", MODEL, "--kubeconfig", str(kubeconfig), "--requests", "6", "--concurrency", "2"]
    code, result = run_json(capsys, *argv, "--timeout", "2")
    checks = by_check(result)
    assert code == cli.EXIT_PASSED, checks
    assert checks["port-forward"]["detail"] == "via pods a:8000, b:8000"
    assert checks["health"]["detail"] == "2/2 pods answered 200"
    assert checks["models"]["detail"] == "2/2 pods listed 'llama-8b'"
    assert checks["completions"]["detail"] == "6/6 succeeded"
    assert len(first.chat_requests) == len(second.chat_requests) == 3, "each pod served one worker"
    # One websocket per connection: /health, /v1/models, and the one kept-alive connection of its worker.
    assert sorted(api_server.port_forwards) == ["a", "a", "a", "b", "b", "b"]
    # The client's port-forward setup is not thread-safe: unserialized, it can leave the client unable to read pods.
    assert api_server.peak_handshaking == 1


def test_a_non_json_api_answer_is_a_kube_error(api_server, tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(api_server.url)))
    kube = kubeapi.KubeApi(str(kubeconfig), None, timeout=2)
    with pytest.raises(kubeapi.KubeError) as raised:
        kube.service("vllm", "behind-a-proxy")
    assert str(raised.value) == (
        "reading Service vllm/behind-a-proxy: the answer is not JSON (<html><body>502 Bad Gateway</body></html>)"
    )


def test_an_answer_nested_too_deep_for_the_parser_is_a_kube_error(api_server, tmp_path):
    api_server.objects["/api/v1/namespaces/vllm/services/deep"] = b"[" * 100_000
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(api_server.url)))
    kube = kubeapi.KubeApi(str(kubeconfig), None, timeout=2)
    with pytest.raises(kubeapi.KubeError, match=r"^reading Service vllm/deep: the answer is not JSON \(\[{120}\)$"):
        kube.service("vllm", "deep")


def test_a_restart_at_a_time_without_an_offset_fails_the_restarts_check_without_a_traceback(api_server, tmp_path, capsys):
    restarted = pod("a", restarts=1, finished_at="2026-01-01T10:00:00")
    api_server.objects[PODS_PATH] = {"kind": "PodList", "items": [restarted]}
    code, result = verify_through_api(api_server, tmp_path, capsys)
    assert code == cli.EXIT_FAILED
    assert any("a time without a timezone offset" in c["detail"] and c["status"] == "FAIL" for c in result["checks"])


def cut_short(handler: Any) -> None:
    """Headers promising 1000 bytes, then 20 and the connection closed."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b'{"kind": "Service", ')
    handler.close_connection = True


def trickled(handler: Any) -> None:
    """A body one byte every 0.1 s, each read well within any timeout, for at most 10 s: the request as a whole
    never ends in time."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    with contextlib.suppress(OSError):
        for _ in range(100):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.1)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (cut_short, "reading Service vllm/odd: ProtocolError: ('Connection broken: IncompleteRead(20 bytes read, 980 more expected)', IncompleteRead(20 bytes read, 980 more expected))"),
        (trickled, "reading Service vllm/odd: no whole answer within 1 s"),
        (json.dumps(service()).encode(), None),
    ],
    ids=["cut-short", "trickled", "whole"],
)
def test_an_api_answer_cut_short_or_trickled_is_a_kube_error_within_the_timeout(api_server, tmp_path, answer, expected):
    """The body is read inside the error handling and within the request's total timeout, not per socket read."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(api_server.url)))
    api_server.objects["/api/v1/namespaces/vllm/services/odd"] = answer
    kube = kubeapi.KubeApi(str(kubeconfig), None, timeout=1)
    if expected is None:
        assert kube.service("vllm", "odd") == service()
        return
    with pytest.raises(kubeapi.KubeError) as raised:
        kube.service("vllm", "odd")
    assert str(raised.value) == expected


def test_no_api_call_outlasts_the_runs_deadline(api_server, tmp_path) -> None:
    """A trickled answer is cut at the run's deadline, well before the call's own 30 s; a call after the deadline is
    not made; with time left, the call is made as usual."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(api_server.url)))
    api_server.objects["/api/v1/namespaces/vllm/services/odd"] = trickled
    api_server.objects["/api/v1/namespaces/vllm/services/whole"] = json.dumps(service()).encode()
    soon = kubeapi.KubeApi(str(kubeconfig), None, timeout=30, deadline=time.monotonic() + 2)
    with pytest.raises(kubeapi.KubeError) as raised:
        soon.service("vllm", "odd")
    # Given what was left of the 2 s (or, on a machine stalled past them, not sent): never the call's own 30 s.
    cut = re.fullmatch(r"reading Service vllm/odd: no whole answer within ([0-9.]+) s", str(raised.value))
    assert (cut and float(cut[1]) <= 2) or str(raised.value).endswith("not sent: the run's --deadline passed"), raised.value
    passed = kubeapi.KubeApi(str(kubeconfig), None, timeout=30, deadline=time.monotonic() - 1)
    with pytest.raises(kubeapi.KubeError) as raised:
        passed.service("vllm", "whole")
    assert str(raised.value) == "reading Service vllm/whole: not sent: the run's --deadline passed"
    later = kubeapi.KubeApi(str(kubeconfig), None, timeout=30, deadline=time.monotonic() + 30)
    assert later.service("vllm", "whole") == service()


REMOVED = object()


def replaced(document: dict[str, Any], value: Any, *path: Any) -> dict[str, Any]:
    """A deep copy of `document` with the field at `path` set to `value`, or removed for REMOVED."""
    changed = copy.deepcopy(document)
    parent = changed
    for key in path[:-1]:
        parent = parent[key]
    if value is REMOVED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return changed


def without(document: dict[str, Any], *path: Any) -> dict[str, Any]:
    return replaced(document, REMOVED, *path)


PODS_PATH = "/api/v1/namespaces/vllm/pods"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/vllm/deployments/{MODEL}"
RESTARTED = pod("a", restarts=1, finished_at="2025-06-01T11:58:00Z")


@pytest.mark.parametrize(
    "path, answer, field",
    [
        (DEPLOYMENT_PATH, without(deployment(), "spec", "selector"), "spec.selector: Field required"),
        (DEPLOYMENT_PATH, replaced(deployment(), "2", "spec", "replicas"), "spec.replicas: Input should be a valid integer"),
        (DEPLOYMENT_PATH, replaced(deployment(), None, "status"), "status: Input should be a valid dictionary"),
        (PODS_PATH, {"items": [without(pod("a"), "metadata", "name")]}, "items.0.metadata.name: Field required"),
        (PODS_PATH, {"items": [without(pod("a"), "spec", "containers")]}, "items.0.spec.containers: Field required"),
        (PODS_PATH, {"items": [replaced(RESTARTED, "yesterday", "status", "containerStatuses", 0, "lastState", "terminated", "finishedAt")]},
         "items.0.status.containerStatuses.0.lastState.terminated.finishedAt: Value error"),
        # RFC 3339 needs an offset: a local time or a date alone cannot be compared with the time now.
        (PODS_PATH, {"items": [replaced(RESTARTED, "2026-01-01T10:00:00", "status", "containerStatuses", 0, "lastState", "terminated", "finishedAt")]},
         "items.0.status.containerStatuses.0.lastState.terminated.finishedAt: Value error, a time without a timezone offset"),
        (PODS_PATH, {"items": [replaced(RESTARTED, "2026-01-01", "status", "containerStatuses", 0, "lastState", "terminated", "finishedAt")]},
         "items.0.status.containerStatuses.0.lastState.terminated.finishedAt: Value error, a time without a timezone offset"),
        (PODS_PATH, {"items": [replaced(pod("a"), "1", "status", "containerStatuses", 0, "restartCount")]},
         "items.0.status.containerStatuses.0.restartCount: Input should be a valid integer"),
        (PODS_PATH, {"kind": "PodList"}, "items: Field required"),
    ],
)  # fmt: skip
def test_an_api_answer_not_shaped_as_the_apis_is_a_kube_error(api_server, tmp_path, path, answer, field):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(api_server.url)))
    kube = kubeapi.KubeApi(str(kubeconfig), None, timeout=2)
    # The same reads, well formed, pass: a restart with a real time, every field as the API writes it.
    api_server.objects[PODS_PATH] = {"kind": "PodList", "items": [RESTARTED]}
    assert kube.deployment("vllm", MODEL) == deployment() and kube.pods("vllm", "a=b") == [RESTARTED]
    api_server.objects[path] = answer
    read = (lambda: kube.deployment("vllm", MODEL)) if path == DEPLOYMENT_PATH else (lambda: kube.pods("vllm", "a=b"))
    with pytest.raises(kubeapi.KubeError) as raised:
        read()
    assert "the answer is not shaped as the API's" in str(raised.value) and field in str(raised.value)


def test_a_deployment_without_a_selector_fails_the_check_without_a_traceback(api_server, tmp_path, capsys):
    api_server.objects[DEPLOYMENT_PATH] = without(deployment(), "spec", "selector")
    code, result = verify_through_api(api_server, tmp_path, capsys)
    checks = by_check(result)
    assert code == cli.EXIT_FAILED
    assert checks["deployment"]["status"] == "FAIL" and "spec.selector: Field required" in checks["deployment"]["detail"]


@pytest.fixture
def fake_pulumi(tmp_path, monkeypatch) -> Any:
    """A `pulumi` on PATH that prints the given stack outputs (or fails) and records its calls, one per line,
    as verify makes them through the Automation API's PulumiCommand: `version` first, then the outputs masked, and decrypted only where a secret one is used.

    Like the real one, it shows a secret kubeconfig output as "[secret]" unless asked for it with --show-secrets."""

    def install(
        outputs: Optional[dict[str, Any]] = None, fail: Optional[str] = None, kubeconfig: Optional[dict[str, Any]] = None
    ) -> Path:
        shown = dict(outputs or {})
        if kubeconfig is not None:
            outputs = {**(outputs or {}), "kubeconfig": "[secret]"}
            shown["kubeconfig"] = kubeconfig
            (tmp_path / "shown.json").write_text(json.dumps(shown))
        (tmp_path / "outputs.json").write_text(json.dumps(outputs))
        if kubeconfig is None:
            (tmp_path / "shown.json").write_text(json.dumps(shown))
        answer = (
            f'case "$*" in *--show-secrets*) cat "{tmp_path}/shown.json" || {{ echo "error: cannot decrypt" >&2; exit 255; }};; '
            f'*) cat "{tmp_path}/outputs.json";; esac'
        )
        body = f'echo "{fail}" >&2; exit 255' if fail else answer
        script = tmp_path / "pulumi"
        script.write_text(
            f'#!/bin/sh\n[ "$1" = version ] && {{ echo v3.272.0; exit 0; }}\necho "$@" >> "{tmp_path}/args"\n{body}\n'
        )
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        return tmp_path / "args"

    return install


MASKED_READ, DECRYPTED_READ = "--non-interactive stack output --json --stack {0}", "--non-interactive stack output --json --show-secrets --stack {0}"


def made_calls(recorded: Any, stack: str = "dev", decrypted: bool = False) -> bool:
    """Whether the recorded `pulumi` calls are the masked read of the outputs and, only where a secret output was
    used, the decrypted one: the same words each, in whatever order the installed pulumi puts the global flag."""
    expected = [MASKED_READ, DECRYPTED_READ] if decrypted else [MASKED_READ]
    return [sorted(line.split()) for line in recorded.read_text().splitlines()] == [
        sorted(call.format(stack).split()) for call in expected
    ]


def test_stack_mode_checks_every_model_in_the_outputs(double, fake_pulumi, capsys):
    healthy, broken = double(), double(chat_status=500)
    args = fake_pulumi(
        {
            "namespace": "vllm",
            "models": {
                "a-model": {"serviceUrl": healthy.url, "servedModelName": MODEL, "port": 8000},
                "b-model": {"serviceUrl": broken.url, "servedModelName": MODEL, "port": 8000},
            },
        }
    )
    code, result = run_json(capsys, "--stack", "dev", *FAST)
    assert made_calls(args)
    assert code == cli.EXIT_FAILED
    failed = [(c["model"], c["check"]) for c in result["checks"] if c["status"] == "FAIL"]
    assert failed == [("b-model", "completions"), ("b-model", "latency-p95")]


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ({"servedModelName": 5, "serviceUrl": 7}, "(got 5, 7)"),
        ({"servedModelName": MODEL, "serviceUrl": "ftp://x"}, "(got 'llama-8b', 'ftp://x')"),
        ({"servedModelName": MODEL}, "(got 'llama-8b', None)"),
        ("llama-8b", "(got None, None)"),
    ],
    ids=["numbers", "not http", "no url", "not an object"],
)
def test_a_models_output_of_another_shape_is_a_usage_error(fake_pulumi, capsys, model, shown):
    """Stack outputs are data verify did not write: each model's served name and URL are checked before use."""
    fake_pulumi({"namespace": "vllm", "models": {"a": model}})
    assert cli.main(["--stack", "dev", *FAST]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.strip().endswith(
        f"the stack's `models.a` output is not the documented shape: a servedModelName and an http(s) serviceUrl {shown}"
    )
    assert "Traceback" not in err


def test_a_pulumi_failure_is_a_usage_error(fake_pulumi, capsys):
    fake_pulumi(fail="error: no stack named 'nope' found")
    assert cli.main(["--stack", "nope"]) == cli.EXIT_USAGE
    assert "no stack named 'nope' found" in capsys.readouterr().err


ONE_MODEL = {
    "namespace": "vllm",
    "models": {MODEL: {"serviceUrl": f"http://{MODEL}.vllm.svc.cluster.local:8000", "servedModelName": MODEL}},
}


def test_stack_kubeconfig_output_enables_kubernetes_checks(api_server, fake_pulumi, capsys):
    """The cluster answers but refuses the port-forward upgrade (no RBAC for it): failed HTTP checks, no traceback."""
    calls = fake_pulumi(ONE_MODEL, kubeconfig=kubeconfig_for(api_server.url))
    code = cli.main(["--stack", "dev", *FAST, "--json"])
    out, err = capsys.readouterr()
    assert made_calls(calls, decrypted=True)
    checks = by_check(json.loads(out))
    assert code == cli.EXIT_FAILED
    assert [checks[name]["status"] for name in ("deployment", "pods-ready", "restarts")] == ["PASS"] * 3
    # The refusal itself is the port-forward check's: not one stream could be opened.
    assert checks["port-forward"]["status"] == "FAIL"
    assert checks["port-forward"]["detail"].startswith("pod a: no stream could be opened: port-forward to vllm/a:8000: ")
    refused = "a: RemoteDisconnected: Remote end closed connection without response"
    assert checks["health"]["status"] == "FAIL" and checks["health"]["detail"] == f"0/1 pods answered 200; {refused}"
    assert checks["models"]["status"] == "FAIL" and checks["models"]["detail"].endswith(refused)
    assert "port-forward to vllm/a:8000: ApiException: Handshake status 403 Forbidden" in err


def test_the_flags_kubeconfig_wins_over_the_stacks_and_no_secret_is_decrypted(fake_pulumi, tmp_path, capsys):
    """With --kubeconfig, the stack's secret kubeconfig is never decrypted: a passphrase stack needs no passphrase."""
    calls = fake_pulumi(ONE_MODEL, kubeconfig={"kind": "Config"})
    code, result = run_json(capsys, "--stack", "dev", "--kubeconfig", str(tmp_path / "missing"), *FAST)
    assert [(c["check"], c["status"]) for c in result["checks"]] == [("kubeconfig", "FAIL")]
    assert str(tmp_path / "missing") in result["checks"][0]["detail"]
    assert made_calls(calls)


def test_a_failed_secret_read_is_a_usage_error(fake_pulumi, tmp_path, capsys):
    fake_pulumi(ONE_MODEL, kubeconfig={"kind": "Config"})
    (tmp_path / "shown.json").unlink()
    assert cli.main(["--stack", "dev", "--kubeconfig", str(tmp_path / "missing"), *FAST, "--json"]) == cli.EXIT_FAILED
    capsys.readouterr()
    assert cli.main(["--stack", "dev"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "reading the outputs of stack dev failed" in err and "cannot decrypt" in err


def write_stack_file(directory: Path, name: str, **platform: Any) -> None:
    """A valid Pulumi.<name>.yaml: the minimal stack, with these `vllm-platform:` keys replaced."""
    document = minimal_document(**platform)
    (directory / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))


def test_the_stack_files_context_selects_the_cluster_in_the_stacks_kubeconfig(
    api_server, refused_url, fake_pulumi, tmp_path, monkeypatch, capsys
):
    kubeconfig = kubeconfig_for(api_server.url)
    kubeconfig["clusters"].append({"name": "gone", "cluster": {"server": refused_url}})
    kubeconfig["contexts"].append({"name": "gone", "context": {"cluster": "gone", "user": "fake"}})
    kubeconfig["current-context"] = "gone"
    fake_pulumi(ONE_MODEL, kubeconfig=kubeconfig)
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    document["config"]["vllm-platform:cluster"]["existing"] = {"context": "fake"}
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setattr(stack, "PROJECT_ROOT", tmp_path)
    code, result = run_json(capsys, "--stack", "acme/dev", *FAST)
    assert by_check(result)["deployment"]["status"] == "PASS", "read through the stack file's context, not `gone`"


def test_existing_cluster_stacks_name_their_context() -> None:
    assert stack.stack_file_context("local") == "kind-vllm-platform"
    assert stack.stack_file_context("acme/local") == "kind-vllm-platform"
    assert stack.stack_file_context("acme/vllm-platform/local") == "kind-vllm-platform"
    assert stack.stack_file_context("dev") is None
    assert stack.stack_file_context("no-such-stack") is None


def test_p95_slo_comes_from_the_flag_then_the_stack_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    write_stack_file(tmp_path, "slo", verify={"p95SloSeconds": 1.5})
    monkeypatch.setattr(stack, "PROJECT_ROOT", tmp_path)
    args = cli.parser().parse_args(["--stack", "slo"])
    assert cli.p95_slo(args) == 1.5
    assert cli.p95_slo(cli.parser().parse_args(["--stack", "acme/vllm-platform/slo"])) == 1.5
    assert cli.p95_slo(cli.parser().parse_args(["--stack", "slo", "--p95-slo", "2"])) == 2
    assert cli.p95_slo(cli.parser().parse_args(["--stack", "dev"])) == 3.0


@pytest.mark.parametrize("value", ["fast", 0, [1, 2]])
def test_a_bad_p95_slo_in_the_stack_file_is_a_usage_error(value, tmp_path, monkeypatch, capsys):
    """Read through the program's own config model: the same check, and the same message, as `pulumi preview`."""
    write_stack_file(tmp_path, "slo", verify={"p95SloSeconds": value})
    monkeypatch.setattr(stack, "PROJECT_ROOT", tmp_path)
    assert cli.main(["--stack", "slo"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Pulumi.slo.yaml: invalid vllm-platform stack config (1 problem)" in err and "verify.p95SloSeconds: " in err


def test_a_port_forward_whose_every_stream_is_refused_fails_the_port_forward_check(api_server, tmp_path, capsys):
    """The API server refuses each websocket (no backend for the pod: 403): the port-forward check says so."""
    code, result = verify_through_api(api_server, tmp_path, capsys)
    checks = by_check(result)
    assert code == cli.EXIT_FAILED
    assert checks["port-forward"]["status"] == "FAIL"
    assert checks["port-forward"]["detail"].startswith("pod a: no stream could be opened: port-forward to vllm/a:8000: ")
    assert checks["health"]["status"] == "FAIL" and api_server.port_forwards
