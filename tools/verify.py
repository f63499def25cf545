"""Post-deploy verification: are the models up, Ready, answering, and fast enough?

    python -m tools.verify --url http://127.0.0.1:8000 --model llama-8b
    python -m tools.verify --stack dev [--kubeconfig PATH] [--context NAME] [--json]

HTTP checks for each model: /health answers 200; /v1/models lists the served model name; N chat
completions, at bounded concurrency, have no errors and a p95 latency within the SLO.
With a kubeconfig (--kubeconfig, --context, the stack's `kubeconfig` output or its cluster.existing.context)
it also checks the Deployment's available replicas, the pods' Ready condition and recent restarts, and
reaches every Ready pod behind each Service through port-forwards made with the kubernetes client, so
neither kubectl nor in-cluster DNS is needed: /health and /v1/models on each pod, completions spread over them.

Progress goes to stderr; the table (or --json) to stdout.
Exit codes: 0 every check passed, 1 some check failed, 2 usage error (bad flags, no pulumi CLI, unknown stack).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import math
import os
import re
import select
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence
from urllib.parse import urlsplit

import urllib3
import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import OpenApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import portforward

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

SERVICE_PORT_NAME = "http"
# A model that scales to zero answers through the KEDA HTTP add-on's interceptor; its first request waits
# for a GPU node and the model's load. Without --wait-ready, verify allows this long for that wake-up.
WAKE_SECONDS = 1200.0
PROMPT = "Reply with the single word OK."
# Enough for a short answer; the point is the round trip, not the generation.
MAX_TOKENS = 8
# Cluster-local Service URLs, as the `models` output gives them: http://NAME.NAMESPACE.svc[.cluster.local][:PORT]
SERVICE_HOST = re.compile(r"^(?P<name>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc(\.cluster\.local)?$")


class UsageError(Exception):
    """Bad flags or an unusable environment: exit 2, no checks run."""


class KubeError(Exception):
    """A Kubernetes API call or port-forward that failed; becomes a FAILED check, never a traceback."""


@dataclass(frozen=True)
class Target:
    name: str  # the model's name in the stack: its Deployment and Service are named after it
    served_model: str
    url: str
    namespace: Optional[str] = None


@dataclass(frozen=True)
class Check:
    model: str
    check: str
    passed: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "check": self.check,
            "status": self.status,
            "detail": self.detail,
            "data": self.data,
        }


@dataclass(frozen=True)
class Options:
    requests: int = 20
    concurrency: int = 4
    timeout: float = 30.0
    p95_slo: float = 3.0
    wait_ready: float = 0.0
    # How often --wait-ready asks again; short, because the deadline is what bounds the wait.
    wait_interval: float = 2.0
    restart_window: float = 900.0


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
        return f"HTTP {self.status}" + (f": {text[:120]}" if text else "")


def progress(message: str) -> None:
    print(f"verify: {message}", file=sys.stderr, flush=True)


class HttpClient:
    """Requests to one base URL over one HTTP/1.1 connection, kept alive from one request to the next.

    http.client rather than urllib: urllib would route loopback port-forwards through any *_proxy
    from the environment."""

    def __init__(self, base_url: str, timeout: float, host: Optional[str] = None):
        parts = urlsplit(base_url)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        # The interceptor routes by Host, and a port-forward's URL names 127.0.0.1.
        self._headers = {"Accept": "application/json", **({"Host": host} if host is not None else {})}

    def request(self, path: str, payload: Optional[dict[str, Any]] = None) -> Response:
        """GET path, or POST the payload to it; transport failures come back as Response.error."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = self._headers if body is None else {**self._headers, "Content-Type": "application/json"}
        started = time.monotonic()
        reused = self._connection.sock is not None
        try:
            try:
                return self._exchange(path, body, headers, started)
            except http.client.RemoteDisconnected:
                # A kept-alive connection that the server, or a port-forward's idle timeout, closed meanwhile:
                # the request never got an answer, so it is sent once more on a new connection.
                if not reused:
                    raise
                self._connection.close()
                return self._exchange(path, body, headers, started)
        except (OSError, http.client.HTTPException) as exc:
            self._connection.close()
            if isinstance(exc, TimeoutError):
                reason = f"timed out after {self._timeout:g} s"
            elif isinstance(exc, ConnectionRefusedError):
                reason = "connection refused"
            else:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Response(None, b"", time.monotonic() - started, reason)

    def _exchange(self, path: str, body: Optional[bytes], headers: dict[str, str], started: float) -> Response:
        self._connection.request("GET" if body is None else "POST", self._prefix + path, body=body, headers=headers)
        reply = self._connection.getresponse()
        data = reply.read()
        return Response(reply.status, data, time.monotonic() - started)

    def close(self) -> None:
        self._connection.close()


def http_request(url: str, timeout: float, host: Optional[str] = None) -> Response:
    """One GET on a connection of its own."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with contextlib.closing(HttpClient(f"{parts.scheme}://{parts.netloc}", timeout, host)) as client:
        return client.request(path)


def listed_models(body: bytes) -> list[str]:
    """The ids in a /v1/models answer ({"object": "list", "data": [{"id": ...}, ...]})."""
    document = json.loads(body)
    return [entry["id"] for entry in document["data"]]


def completion_problem(response: Response) -> Optional[str]:
    """None for a usable chat completion, else why it is not one."""
    if not response.ok:
        return response.problem()
    try:
        choices = json.loads(response.body)["choices"]
        choices[0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"HTTP {response.status} without a chat completion"
    return None


def models_problem(response: Response, served_model: str) -> Optional[str]:
    """None when /v1/models answered and lists the served model, else why not."""
    if not response.ok:
        return response.problem()
    try:
        ids = listed_models(response.body)
    except (ValueError, KeyError, TypeError):
        return "answer is not a model list"
    if served_model not in ids:
        return f"{served_model!r} not listed (listed: {', '.join(ids) or 'none'})"
    return None


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: always one of the measured values, never an interpolation below it."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def evaluate_completions(model: str, responses: Sequence[Response], p95_slo: float) -> list[Check]:
    """The `completions` (error count) and `latency-p95` checks from a batch of chat completions."""
    problems = [completion_problem(r) for r in responses]
    latencies = [r.elapsed for r, p in zip(responses, problems) if p is None]
    errors = Counter(p for p in problems if p is not None)
    failed = sum(errors.values())
    if failed:
        summary = "; ".join(f"{reason} x{count}" for reason, count in errors.most_common(3))
        completions = Check(model, "completions", False, f"{failed}/{len(responses)} failed: {summary}")
    else:
        completions = Check(model, "completions", True, f"{len(responses)}/{len(responses)} succeeded")

    data: dict[str, Any] = {"requests": len(responses), "errors": failed, "p95SloSeconds": p95_slo}
    if not latencies:
        return [completions, Check(model, "latency-p95", False, "no successful completion to measure", data)]
    p50, p95, worst = percentile(latencies, 50), percentile(latencies, 95), max(latencies)
    data.update({"p50Seconds": round(p50, 4), "p95Seconds": round(p95, 4), "maxSeconds": round(worst, 4)})
    detail = f"p50 {p50:.3f} s, p95 {p95:.3f} s, max {worst:.3f} s (SLO p95 <= {p95_slo:g} s)"
    return [completions, Check(model, "latency-p95", p95 <= p95_slo, detail, data)]


def chat_completions(
    base_urls: Sequence[str], served_model: str, options: Options, host: Optional[str] = None
) -> list[Response]:
    """options.requests completions from options.concurrency workers, each on a connection of its own,
    the workers taking the base URLs in turn.

    Each worker first sends an untimed GET /v1/models: through a port-forward a new connection is a new
    websocket to the API server, and setting that up is not the model's latency."""
    payload = {
        "model": served_model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    workers = min(options.concurrency, options.requests)
    shares = [options.requests // workers + (index < options.requests % workers) for index in range(workers)]

    def work(index: int) -> list[Response]:
        with contextlib.closing(HttpClient(base_urls[index % len(base_urls)], options.timeout, host)) as client:
            client.request("/v1/models")
            return [client.request("/v1/chat/completions", payload) for _ in range(shares[index])]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [response for batch in pool.map(work, range(workers)) for response in batch]


def endpoints_check(model: str, check: str, problems: dict[Optional[str], Optional[str]], success: str) -> Check:
    """One check over every endpoint: a lone URL's problem as it is, or how many pods passed and why others did not."""
    failing = {pod: problem for pod, problem in problems.items() if problem is not None}
    if None in problems:
        return Check(model, check, not failing, failing.get(None) or success)
    detail = f"{len(problems) - len(failing)}/{len(problems)} pods {success}"
    return Check(model, check, not failing, "; ".join([detail, *(f"{pod}: {why}" for pod, why in failing.items())]))


def http_checks(
    target: Target, base_urls: dict[Optional[str], str], options: Options, host: Optional[str] = None
) -> list[Check]:
    """health and models on every base URL, keyed by the pod it reaches (None: no particular pod), then the
    completions spread over those that list the model."""
    health: dict[Optional[str], Optional[str]] = {}
    models: dict[Optional[str], Optional[str]] = {}
    for pod, base_url in base_urls.items():
        base_url = base_url.rstrip("/")
        where = f" (pod {pod})" if pod else ""
        progress(f"{target.name}: GET {base_url}/health{where}")
        response = http_request(f"{base_url}/health", options.timeout, host=host)
        health[pod] = None if response.error is None and response.status == 200 else response.problem()
        progress(f"{target.name}: GET {base_url}/v1/models{where}")
        response = http_request(f"{base_url}/v1/models", options.timeout, host=host)
        models[pod] = models_problem(response, target.served_model)
    checks = [
        endpoints_check(target.name, "health", health, "answered 200"),
        endpoints_check(target.name, "models", models, f"listed {target.served_model!r}"),
    ]
    serving = [base_urls[pod] for pod, problem in models.items() if problem is None]
    if not serving:
        # Completions for a model no server lists can only fail the same way; say so once.
        skipped = "skipped: the models check failed"
        return checks + [Check(target.name, name, False, skipped) for name in ("completions", "latency-p95")]
    progress(f"{target.name}: {options.requests} chat completions, {options.concurrency} at a time")
    return checks + evaluate_completions(
        target.name, chat_completions(serving, target.served_model, options, host), options.p95_slo
    )


def wait_until(probe: Callable[[float], Optional[str]], seconds: float, interval: float) -> Optional[str]:
    """Call probe(time left) until it returns None or the deadline passes; return its last complaint, or None."""
    deadline = time.monotonic() + seconds
    while True:
        reason = probe(max(deadline - time.monotonic(), 0.001))
        remaining = deadline - time.monotonic()
        if reason is None or remaining <= 0:
            return reason
        time.sleep(min(interval, remaining))


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions") or []}


def is_ready(pod: dict[str, Any]) -> bool:
    return _conditions(pod).get("Ready", {}).get("status") == "True"


def live_pods(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods not on their way out: a terminating pod is neither a problem nor a place to send traffic."""
    return sorted((p for p in pods if not p["metadata"].get("deletionTimestamp")), key=lambda p: p["metadata"]["name"])


def pod_problem(pod: dict[str, Any]) -> str:
    """The most telling reason a pod is not Ready: a waiting container, unschedulable, or the condition."""
    status = pod.get("status", {})
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return f"{container['name']} {waiting.get('reason', 'waiting')}"
    scheduled = _conditions(pod).get("PodScheduled", {})
    if scheduled.get("status") == "False":
        reason, message = scheduled.get("reason", "Unscheduled"), scheduled.get("message")
        return f"{reason}: {message}" if message else reason
    ready = _conditions(pod).get("Ready", {})
    return ready.get("reason") or status.get("phase", "unknown phase")


def evaluate_deployment(model: str, deployment: dict[str, Any]) -> Check:
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    desired = spec.get("replicas", 1)
    available = status.get("availableReplicas", 0)
    updated = status.get("updatedReplicas", 0)
    detail = f"{available}/{desired} available, {updated} updated"
    progressing = _conditions(deployment).get("Progressing", {})
    if progressing.get("status") == "False":
        return Check(
            model, "deployment", False, f"{detail}; {progressing.get('reason')}: {progressing.get('message', '')}"
        )
    if desired < 1:
        return Check(model, "deployment", False, f"{detail}; scaled to zero, nothing serves")
    if updated < desired:
        return Check(model, "deployment", False, f"{detail}; rollout still in progress")
    return Check(model, "deployment", available >= desired, detail)


def evaluate_pods(model: str, pods: Sequence[dict[str, Any]]) -> Check:
    pods = live_pods(pods)
    if not pods:
        return Check(model, "pods-ready", False, "no pods")
    not_ready = [p for p in pods if not is_ready(p)]
    detail = f"{len(pods) - len(not_ready)}/{len(pods)} Ready"
    if not_ready:
        detail += "; " + ", ".join(f"{p['metadata']['name']}: {pod_problem(p)}" for p in not_ready)
    return Check(model, "pods-ready", not not_ready, detail)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def evaluate_restarts(
    model: str,
    before: Sequence[dict[str, Any]],
    after: Sequence[dict[str, Any]],
    now: datetime,
    window: timedelta,
) -> Check:
    """Fail on a container that restarted within the window or while verify ran (its count went up),
    and on a pod that went away meanwhile: each means the model is not as stable as the other checks saw."""
    counts_before = {
        (p["metadata"]["name"], c["name"]): c.get("restartCount", 0)
        for p in before
        for c in p.get("status", {}).get("containerStatuses") or []
    }
    problems: list[str] = []
    total = 0
    for pod in after:
        pod_name = pod["metadata"]["name"]
        for container in pod.get("status", {}).get("containerStatuses") or []:
            count = container.get("restartCount", 0)
            total += count
            where = f"{pod_name}/{container['name']}"
            previous = counts_before.get((pod_name, container["name"]))
            terminated = (container.get("lastState") or {}).get("terminated") or {}
            finished = terminated.get("finishedAt")
            why = f"{terminated.get('reason', 'terminated')}, exit {terminated.get('exitCode', '?')}"
            if previous is not None and count > previous:
                problems.append(f"{where} restarted during verification ({previous} -> {count}; {why})")
            elif count and finished and now - _parse_time(finished) <= window:
                problems.append(f"{where} restarted at {finished} ({why}); restart count {count}")
    gone = sorted({name for name, _ in counts_before} - {p["metadata"]["name"] for p in after})
    problems += [f"{name} went away during verification" for name in gone]
    if problems:
        return Check(model, "restarts", False, "; ".join(problems))
    minutes = f"{window.total_seconds() / 60:g}m"
    detail = f"none in the last {minutes}" + (f" ({total} older)" if total else "")
    return Check(model, "restarts", True, detail)


def label_selector(match_labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


def forward_targets(
    service: dict[str, Any], pods: Sequence[dict[str, Any]], port: "int | str" = SERVICE_PORT_NAME
) -> list[tuple[str, int]]:
    """Each Ready pod, with the container port that the Service's port (by name or number) leads to on it."""
    ports = service["spec"].get("ports") or []
    key = "port" if isinstance(port, int) else "name"
    named = [p for p in ports if p.get(key) == port] or (ports if len(ports) == 1 else [])
    if not named:
        raise KubeError(f"Service {service['metadata']['name']} has no port {port!r}")
    target_port = named[0].get("targetPort", named[0]["port"])
    ready = [p for p in live_pods(pods) if is_ready(p)]
    if not ready:
        raise KubeError(f"no Ready pod behind Service {service['metadata']['name']}")
    return [(pod["metadata"]["name"], container_port(pod, target_port)) for pod in ready]


def container_port(pod: dict[str, Any], target_port: "int | str") -> int:
    if isinstance(target_port, int):
        return target_port
    for container in pod["spec"]["containers"]:
        for port in container.get("ports") or []:
            if port.get("name") == target_port:
                return port["containerPort"]
    raise KubeError(f"pod {pod['metadata']['name']} has no container port named {target_port!r}")


KUBE_ERRORS = (OpenApiException, urllib3.exceptions.HTTPError, OSError)


class KubeApi:
    """The few reads verify makes, as plain API JSON, and port-forward streams; errors become KubeError."""

    def __init__(self, kubeconfig: Optional[str], context: Optional[str], timeout: float):
        self._timeout = timeout
        # The client's portforward() swaps call_api on the shared ApiClient while it connects: a call from
        # another thread meanwhile would go through the swapped one, or restore it for good.
        self._lock = threading.Lock()
        try:
            api_client = kube_config.new_client_from_config(config_file=kubeconfig, context=context)
        except (ConfigException, OSError, yaml.YAMLError) as exc:
            raise KubeError(f"cannot load kubeconfig {kubeconfig or '(default)'}: {exc}") from exc
        self._core = kube_client.CoreV1Api(api_client)
        self._apps = kube_client.AppsV1Api(api_client)

    def _describe(self, exc: BaseException) -> str:
        status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
        if status:
            return f"HTTP {status} {reason or ''}".strip()
        # Failed websocket handshakes carry the whole HTML error page; its first line says enough.
        text = str(reason or exc).strip().splitlines() or [""]
        return f"{type(exc).__name__}: {text[0][:200]}"

    def _read(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Raw JSON, not the client's models: the same camelCase objects `kubectl get -o json` shows,
        # identical across client versions, and what the pure evaluators above read.
        try:
            with self._lock:
                raw = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except KUBE_ERRORS as exc:
            raise KubeError(f"reading {what}: {self._describe(exc)}") from exc
        try:
            return json.loads(raw.data)
        except ValueError as exc:
            # A proxy or load balancer in front of the API server answers with its own page.
            first_line = (raw.data.decode("utf-8", "replace").strip().splitlines() or [""])[0][:120]
            raise KubeError(f"reading {what}: the answer is not JSON ({first_line or 'empty'})") from exc

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self._read(f"Deployment {namespace}/{name}", self._apps.read_namespaced_deployment, name, namespace)

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        return self._read(f"Service {namespace}/{name}", self._core.read_namespaced_service, name, namespace)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listing = self._read(
            f"pods {selector} in {namespace}", self._core.list_namespaced_pod, namespace, label_selector=selector
        )
        return listing["items"]

    def open_stream(self, namespace: str, pod: str, port: int) -> Any:
        """A socket-like stream to the pod's port; one websocket per call, as the client makes them."""
        try:
            with self._lock:
                forward = portforward(
                    self._core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
                )
            return forward.socket(port)
        except KUBE_ERRORS as exc:
            raise KubeError(f"port-forward to {namespace}/{pod}:{port}: {self._describe(exc)}") from exc


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


def service_endpoints(kube: KubeApi, namespace: str, name: str) -> list[tuple[str, int]]:
    """The pods and ports that port-forwards to Service `name` should use."""
    service = kube.service(namespace, name)
    return forward_targets(service, kube.pods(namespace, label_selector(service["spec"].get("selector") or {})))


def _ready_pod_problem(kube: KubeApi, namespace: str, name: str) -> Optional[str]:
    try:
        service_endpoints(kube, namespace, name)
    except KubeError as exc:
        return str(exc)
    return None


def _report_wait(model: str, seconds: float, reason: Optional[str]) -> None:
    if reason is not None:
        progress(f"{model}: still not ready after {seconds:g} s ({reason}); checking anyway")


def _workload_checks(model: str, namespace: str, kube: KubeApi) -> tuple[list[Check], Optional[str], list[dict[str, Any]]]:
    """The deployment and pods-ready checks, with the pod selector and listing the restarts check starts from."""
    progress(f"{model}: reading Deployment {namespace}/{model} and its pods")
    checks: list[Check] = []
    try:
        deployment = kube.deployment(namespace, model)
    except KubeError as exc:
        return [Check(model, "deployment", False, str(exc))], None, []
    checks.append(evaluate_deployment(model, deployment))
    selector = label_selector(deployment["spec"]["selector"].get("matchLabels") or {})
    try:
        pods = kube.pods(namespace, selector)
    except KubeError as exc:
        return [*checks, Check(model, "pods-ready", False, str(exc))], selector, []
    return [*checks, evaluate_pods(model, pods)], selector, pods


def _restarts_check(model: str, namespace: str, kube: KubeApi, selector: str, before: list[dict[str, Any]], options: Options) -> Check:
    try:
        after = kube.pods(namespace, selector)
    except KubeError as exc:
        return Check(model, "restarts", False, str(exc))
    return evaluate_restarts(model, before, after, datetime.now(timezone.utc), timedelta(seconds=options.restart_window))


def interceptor_endpoint(kube: KubeApi, entry: dict[str, Any]) -> tuple[str, str, int]:
    """Namespace, pod and port of the interceptor that an ExternalName entry Service aliases."""
    alias = SERVICE_HOST.match(entry["spec"].get("externalName", ""))
    if not alias:
        raise KubeError(f"Service {entry['metadata']['name']} points outside the cluster ({entry['spec'].get('externalName')})")
    namespace, name = alias["namespace"], alias["name"]
    service = kube.service(namespace, name)
    ports = entry["spec"].get("ports") or [{}]
    pods = kube.pods(namespace, label_selector(service["spec"].get("selector") or {}))
    pod, port = forward_targets(service, pods, ports[0].get("port", SERVICE_PORT_NAME))[0]
    return namespace, pod, port


def interceptor_checks(target: Target, options: Options, kube: KubeApi, entry: dict[str, Any]) -> list[Check]:
    """A model that scales to zero: wake it through the interceptor, as a client would, then check it."""
    namespace, model = str(target.namespace), target.name
    host = f"{model}.{namespace}.svc.cluster.local"
    try:
        via, pod, port = interceptor_endpoint(kube, entry)
    except KubeError as exc:
        return [Check(model, "port-forward", False, str(exc))]
    checks = [Check(model, "port-forward", True, f"via interceptor pod {via}/{pod} port {port} (scales to zero)")]
    progress(f"{model}: port-forward to interceptor {via}/{pod}:{port}, Host {host}")
    wake = options.wait_ready or WAKE_SECONDS
    # The interceptor holds the waking request, silent, until the model serves: a shorter idle timeout
    # would drop it, and every retry after it, before that.
    with LocalForward(lambda: kube.open_stream(via, pod, port), max(options.timeout, wake)) as forward:
        progress(f"{model}: waking it through the interceptor, up to {wake:g} s")
        url = f"{forward.url}/v1/models"
        reason = wait_until(
            lambda left: models_problem(http_request(url, left, host=host), target.served_model), wake, options.wait_interval
        )
        _report_wait(model, wake, reason)
        workload, selector, pods_before = _workload_checks(model, namespace, kube)
        checks += workload + http_checks(target, {None: forward.url}, options, host)
    if selector is not None:
        checks.append(_restarts_check(model, namespace, kube, selector, pods_before, options))
    return checks


def kubernetes_checks(target: Target, options: Options, kube: KubeApi) -> list[Check]:
    """Deployment and pods, then the HTTP checks through a port-forward, then restarts (before and after)."""
    namespace, model = str(target.namespace), target.name
    try:
        entry: Optional[dict[str, Any]] = kube.service(namespace, model)
    except KubeError:
        entry = None  # reported by the port-forward check below
    if entry is not None and entry["spec"].get("type") == "ExternalName":
        return interceptor_checks(target, options, kube, entry)
    if options.wait_ready:
        progress(f"{model}: waiting up to {options.wait_ready:g} s for a Ready pod")
        reason = wait_until(
            lambda _: _ready_pod_problem(kube, namespace, model), options.wait_ready, options.wait_interval
        )
        _report_wait(model, options.wait_ready, reason)

    checks, selector, pods_before = _workload_checks(model, namespace, kube)
    try:
        endpoints = service_endpoints(kube, namespace, model)
    except KubeError as exc:
        checks.append(Check(model, "port-forward", False, str(exc)))
    else:
        pods = ", ".join(f"{pod}:{port}" for pod, port in endpoints)
        checks.append(Check(model, "port-forward", True, f"via pod{'s' if len(endpoints) > 1 else ''} {pods}"))
        progress(f"{model}: port-forward to {namespace}/{pods}")
        with contextlib.ExitStack() as forwards:
            base_urls: dict[Optional[str], str] = {
                pod: forwards.enter_context(
                    LocalForward(functools.partial(kube.open_stream, namespace, pod, port), options.timeout)
                ).url
                for pod, port in endpoints
            }
            checks += http_checks(target, base_urls, options)
    if selector is not None:
        checks.append(_restarts_check(model, namespace, kube, selector, pods_before, options))
    return checks


def verify_target(target: Target, options: Options, kube: Optional[KubeApi] = None) -> list[Check]:
    if kube is not None:
        return kubernetes_checks(target, options, kube)
    if options.wait_ready:
        progress(
            f"{target.name}: waiting up to {options.wait_ready:g} s for /v1/models to list {target.served_model!r}"
        )
        url = f"{target.url.rstrip('/')}/v1/models"
        reason = wait_until(
            lambda left: models_problem(http_request(url, min(options.timeout, left)), target.served_model),
            options.wait_ready,
            options.wait_interval,
        )
        _report_wait(target.name, options.wait_ready, reason)
    return http_checks(target, {None: target.url}, options)


def stack_output(stack: str, *arguments: str) -> Any:
    """`pulumi stack output [ARGUMENTS] --json --stack STACK`, parsed."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise UsageError("the pulumi CLI is not on PATH; install it, or check one endpoint with --url URL --model NAME")
    command = [pulumi, "stack", "output", *arguments, "--json", "--stack", stack]
    shown = " ".join(["pulumi", *command[1:]])
    # No stdin: a stack that needs a passphrase then fails with Pulumi's own message instead of a hidden prompt.
    result = subprocess.run(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise UsageError(f"`{shown}` failed: {result.stderr.strip()}")
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise UsageError(f"`{shown}` did not print JSON: {result.stdout.strip()[:200]}") from exc


def stack_file(stack: str) -> Path:
    # --stack may be fully qualified (org/project/stack, as CI passes it); the file is named after the stack alone.
    return PROJECT_ROOT / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"


def stack_file_config(stack: str, key: str) -> dict[str, Any]:
    """One `vllm-platform:` object key of Pulumi.<stack>.yaml; empty when the file or key is absent."""
    path = stack_file(stack)
    if not path.is_file():
        return {}
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path.name} is not valid YAML: {exc}") from exc
    value = (document.get("config") or {}).get(f"vllm-platform:{key}") or {}
    if not isinstance(value, dict):
        raise UsageError(f"vllm-platform:{key} in {path.name} must be a mapping, got {value!r}")
    return value


def stack_file_context(stack: str) -> Optional[str]:
    """The kubeconfig context an existing-cluster stack deploys to (`cluster.existing.context`), if any."""
    return (stack_file_config(stack, "cluster").get("existing") or {}).get("context")


def targets_from_outputs(outputs: dict[str, Any]) -> list[Target]:
    models = outputs.get("models") or {}
    if not models:
        raise UsageError("the stack has no `models` output; has it been deployed?")
    namespace = outputs.get("namespace")
    return [
        Target(name=name, served_model=model["servedModelName"], url=model["serviceUrl"], namespace=namespace)
        for name, model in sorted(models.items())
    ]


def target_from_url(url: str, model: str) -> Target:
    """One endpoint; a cluster-local Service URL also names the Deployment and namespace for the Kubernetes checks."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {url!r} is not an http(s) URL")
    service = SERVICE_HOST.match(parts.hostname)
    if service:
        return Target(service["name"], model, url, service["namespace"])
    return Target(model, model, url)


@contextlib.contextmanager
def kubeconfig_file(content: Any) -> Iterator[str]:
    """The stack's kubeconfig in a private temporary file, removed afterwards; mkstemp creates it 0600."""
    descriptor, path = tempfile.mkstemp(prefix="verify-", suffix=".kubeconfig")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content if isinstance(content, str) else json.dumps(content))
        yield path
    finally:
        os.unlink(path)


def render_table(checks: Sequence[Check]) -> str:
    header = ("MODEL", "CHECK", "STATUS", "DETAIL")
    rows = [header] + [(c.model, c.check, c.status, c.detail) for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    failed = sum(not c.passed for c in checks)
    lines.append(
        f"FAIL: {failed} of {len(checks)} checks failed" if failed else f"PASS: all {len(checks)} checks passed"
    )
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    return json.dumps({"passed": all(c.passed for c in checks), "checks": [c.as_json() for c in checks]}, indent=2)


def _positive(kind: Callable[[str], Any], minimum: float = 0, inclusive: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {minimum:g}, got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.verify", description=__doc__.split("\n\n")[0])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="one endpoint, e.g. http://127.0.0.1:8000 (needs --model)")
    target.add_argument("--stack", help="every model of this Pulumi stack, from its outputs")
    p.add_argument("--model", help="served model name expected at --url")
    p.add_argument(
        "--kubeconfig",
        help="enables the Kubernetes checks and the port-forward (with --stack, its kubeconfig output is the default)",
    )
    p.add_argument(
        "--context", help="kubeconfig context; on its own, enables the Kubernetes checks with the default kubeconfig"
    )
    p.add_argument(
        "--requests",
        type=_positive(int),
        default=Options.requests,
        help="chat completions per model (default %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive(int),
        default=Options.concurrency,
        help="completions in flight at once (default %(default)s)",
    )
    p.add_argument(
        "--timeout", type=_positive(float), default=Options.timeout, help="seconds per request (default %(default)s)"
    )
    p.add_argument(
        "--p95-slo",
        type=_positive(float),
        metavar="SECONDS",
        help=f"p95 latency limit (default: the stack's verify.p95SloSeconds, else {Options.p95_slo})",
    )
    p.add_argument(
        "--wait-ready",
        type=_positive(float, inclusive=True),
        default=Options.wait_ready,
        metavar="SECONDS",
        help="first wait up to this long for the model to be ready (default: do not wait)",
    )
    p.add_argument(
        "--restart-window",
        type=_positive(float),
        default=Options.restart_window,
        metavar="SECONDS",
        help="a restart this recent fails the restarts check (default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return p


def p95_slo(args: argparse.Namespace) -> float:
    if args.p95_slo is not None:
        return args.p95_slo
    configured = stack_file_config(args.stack, "verify").get("p95SloSeconds") if args.stack else None
    if configured is None:
        return Options.p95_slo
    try:
        seconds = float(configured)
    except (TypeError, ValueError):
        seconds = math.nan
    if not seconds > 0:
        raise UsageError(
            f"vllm-platform:verify.p95SloSeconds in {stack_file(args.stack).name} must be seconds > 0, got {configured!r}"
        )
    return seconds


def run(args: argparse.Namespace) -> list[Check]:
    options = Options(args.requests, args.concurrency, args.timeout, p95_slo(args), args.wait_ready, args.restart_window)
    with contextlib.ExitStack() as stack:
        kubeconfig, context = args.kubeconfig, args.context
        if args.url:
            targets = [target_from_url(args.url, args.model)]
        else:
            # Secret outputs read as "[secret]" here: decrypting them would need a passphrase-protected
            # stack's passphrase, and only the kubeconfig is worth asking for it.
            outputs = stack_output(args.stack)
            targets = targets_from_outputs(outputs)
            if kubeconfig is None and outputs.get("kubeconfig"):
                secret = stack_output(args.stack, "kubeconfig", "--show-secrets")
                kubeconfig = stack.enter_context(kubeconfig_file(secret))
            # The context the stack deploys with selects it in the stack's kubeconfig as in the default one.
            context = context or stack_file_context(args.stack)
        if kubeconfig is None and context is None:
            if args.stack:
                progress(
                    "no kubeconfig: Service URLs resolve only inside the cluster; pass --kubeconfig to port-forward"
                )
            return [check for target in targets for check in verify_target(target, options)]
        if any(t.namespace is None for t in targets):
            raise UsageError(
                "Kubernetes checks need a namespace: give --url as a Service URL, http://NAME.NAMESPACE.svc.cluster.local:PORT"
            )
        try:
            kube = KubeApi(kubeconfig, context, options.timeout)
        except KubeError as exc:
            return [Check("-", "kubeconfig", False, str(exc))]
        return [check for target in targets for check in verify_target(target, options, kube)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.url and not args.model:
        p.error("--url needs --model (the served model name)")
    if args.stack and args.model:
        p.error("--model goes with --url; --stack takes the model names from the stack")
    try:
        checks = run(args)
    except UsageError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(render_json(checks) if args.json else render_table(checks))
    return EXIT_PASSED if all(c.passed for c in checks) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
