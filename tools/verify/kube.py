"""The Kubernetes side of verify: the few API reads it makes, as plain JSON, and port-forward streams.

Every failure (an API error, a proxy's HTML page, an answer not shaped as the API's, a refused upgrade)
becomes a KubeError, which the checks report as a FAILED check, never a traceback.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import portforward
from pydantic import TypeAdapter

from tools.verify import shapes
from vllm_platform.contract import SERVING_PORT_NAME
from vllm_platform.k8s.rollout import KUBE_ERRORS, is_ready, live_pods

# Cluster-local Service URLs, as the `models` output gives them: http://NAME.NAMESPACE.svc[.cluster.local][:PORT]
SERVICE_HOST = re.compile(r"(?P<name>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc(\.cluster\.local)?")


T = TypeVar("T")


class KubeError(Exception):
    """A Kubernetes API call or port-forward that failed; becomes a FAILED check, never a traceback."""


def label_selector(match_labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


def forward_targets(
    service: dict[str, Any], pods: Sequence[dict[str, Any]], port: "int | str" = SERVING_PORT_NAME
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




class KubeApi:
    """The few reads verify makes, as plain API JSON, and port-forward streams; errors become KubeError."""

    def __init__(self, kubeconfig: Optional[str], context: Optional[str], timeout: float, deadline: Optional[float] = None):
        """`timeout`: each call's at most; `deadline`: the run's end (time.monotonic()), which no call outlasts."""
        self._timeout, self._deadline = timeout, deadline
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

    def _budget(self, what: str) -> float:
        """The call's timeout, cut to what is left of the run; a call after the deadline is not made."""
        left = float("inf") if self._deadline is None else self._deadline - time.monotonic()
        if left <= 0:
            raise KubeError(f"{what}: not sent: the run's --deadline passed")
        return min(self._timeout, left)

    def _within(self, what: str, call: Callable[[], T], budget: float) -> T:
        """call() in a worker thread, waited for at most the request's timeout. The client's own timeout bounds
        each socket read, not the request, so an API server (or a proxy before it) trickling its answer would hold
        verify as long as it liked. A call still under way then is abandoned: a daemon thread, ended with the
        process; one stuck holding the port-forward lock makes the calls after it time out too, not hang."""
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["value"] = call()
            except BaseException as exc:  # handed to the caller's thread, which decides what it means
                outcome["error"] = exc

        worker = threading.Thread(target=work, daemon=True)
        try:
            worker.start()
        except RuntimeError as exc:  # a memory limit, a cap on threads: this call fails, not verify
            raise KubeError(f"{what}: cannot start a thread: {exc}") from exc
        worker.join(budget)
        if worker.is_alive():
            raise KubeError(f"{what}: no whole answer within {round(budget, 3):g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _read(self, what: str, shape: TypeAdapter[Any], method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Raw JSON, not the client's models: the same camelCase objects `kubectl get -o json` shows,
        # identical across client versions, and what the pure evaluators above read, once `shape` holds.
        budget = self._budget(f"reading {what}")

        def fetch() -> bytes:
            with self._lock:
                raw = method(*args, _preload_content=False, _request_timeout=budget, **kwargs)
            return bytes(raw.data)  # the body too: a body cut short, or stalled, is this call's failure

        try:
            data = self._within(f"reading {what}", fetch, budget)
        except KUBE_ERRORS as exc:
            raise KubeError(f"reading {what}: {self._describe(exc)}") from exc
        try:
            answer = json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep for the parser
            # A proxy or load balancer in front of the API server answers with its own page.
            first_line = (data.decode("utf-8", "replace").strip().splitlines() or [""])[0][:120]
            raise KubeError(f"reading {what}: the answer is not JSON ({first_line or 'empty'})") from exc
        try:
            shape.validate_python(answer)
        except shapes.ValidationError as exc:
            raise KubeError(f"reading {what}: the answer is not shaped as the API's ({shapes.problem(exc)})") from exc
        return answer

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self._read(
            f"Deployment {namespace}/{name}", shapes.DEPLOYMENT, self._apps.read_namespaced_deployment, name, namespace
        )

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        return self._read(f"Service {namespace}/{name}", shapes.SERVICE, self._core.read_namespaced_service, name, namespace)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listing = self._read(
            f"pods {selector} in {namespace}", shapes.POD_LIST, self._core.list_namespaced_pod, namespace, label_selector=selector
        )
        return listing["items"]

    def events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        listing = self._read(
            f"events {field_selector} in {namespace}", shapes.EVENT_LIST, self._core.list_namespaced_event, namespace,
            field_selector=field_selector,
        )  # fmt: skip
        return listing["items"]

    def open_stream(self, namespace: str, pod: str, port: int) -> Any:
        """A socket-like stream to the pod's port; one websocket per call, as the client makes them."""
        def connect() -> Any:
            with self._lock:
                forward = portforward(
                    self._core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
                )
            return forward.socket(port)

        try:
            what = f"port-forward to {namespace}/{pod}:{port}"
            return self._within(what, connect, self._budget(what))
        except KUBE_ERRORS as exc:
            raise KubeError(f"port-forward to {namespace}/{pod}:{port}: {self._describe(exc)}") from exc




def service_endpoints(kube: KubeApi, namespace: str, name: str) -> list[tuple[str, int]]:
    """The pods and ports that port-forwards to Service `name` should use."""
    service = kube.service(namespace, name)
    return forward_targets(service, kube.pods(namespace, label_selector(service["spec"].get("selector") or {})))


def ready_pod_problem(kube: KubeApi, namespace: str, name: str) -> Optional[str]:
    try:
        service_endpoints(kube, namespace, name)
    except KubeError as exc:
        return str(exc)
    return None

