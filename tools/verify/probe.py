"""The orchestration: which checks run against a model, through which endpoints, in what order, within what time.

Every wait and every request is bounded twice: by its own limit (--timeout per request, --wait-ready for
the wait) and by the run's deadline (--deadline), past which verify reports what it found and stops.
"""

from __future__ import annotations

import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Sequence

from tools.verify.checks import (
    GATEWAY_ROW,
    MODEL_NOT_FOUND,
    Check,
    KeyScope,
    Options,
    Target,
    completion_problem,
    endpoints_check,
    evaluate_capacity,
    evaluate_completions,
    evaluate_deployment,
    evaluate_keyed,
    evaluate_keyless,
    evaluate_pods,
    evaluate_refused,
    evaluate_restarts,
    evaluate_unknown_model,
    models_problem,
)
from tools.verify.client import HttpClient, Response, http_request
from tools.verify.kube import (
    SERVICE_HOST,
    KubeApi,
    KubeError,
    forward_targets,
    label_selector,
    ready_pod_problem,
    service_endpoints,
)
from tools.verify.relay import LocalForward
from tools.verify.report import progress
from vllm_platform.contract import GPU_POOL_LABEL, LIVENESS_PATH, READINESS_PATH, SERVING_PORT_NAME
from vllm_platform.k8s.rollout import INSUFFICIENT_CAPACITY, unscheduled
from vllm_platform.names import GPU_POOL_PREFIX

# A model that scales to zero answers through the KEDA HTTP add-on's interceptor; its first request waits
# for a GPU node and the model's load. Without --wait-ready, verify allows this long for that wake-up.
WAKE_SECONDS = 1200.0
PROMPT = "Reply with the single word OK."
# Enough for a short answer; the point is the round trip, not the generation.
MAX_TOKENS = 8
COMPLETIONS_PATH = "/v1/chat/completions"
PAST_DEADLINE = "not sent: the run's --deadline passed"


def time_left(options: Options) -> float:
    """Seconds until the run's deadline; infinite without one."""
    return float("inf") if options.deadline is None else options.deadline - time.monotonic()


def request_timeout(options: Options) -> float:
    """A request's limit: its own --timeout, or what is left of the run if that is less."""
    return max(min(options.timeout, time_left(options)), 0.001)


def bounded_get(url: str, options: Options, host: Optional[str] = None) -> Response:
    """A GET within what is left of the run; none once the run's deadline has passed."""
    if time_left(options) <= 0:
        return Response(None, b"", 0.0, PAST_DEADLINE)
    return http_request(url, request_timeout(options), host=host)


def completion_payload(served_model: str) -> dict[str, Any]:
    return {
        "model": served_model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }


def chat_completions(
    base_urls: Sequence[str], served_model: str, options: Options, host: Optional[str] = None, api_key: Optional[str] = None
) -> list[Response]:
    """options.requests completions from options.concurrency workers, each on a connection of its own,
    the workers taking the base URLs in turn.

    Each worker first sends an untimed GET /v1/models: through a port-forward a new connection is a new
    websocket to the API server, through the gateway a TLS handshake, and setting that up is not the model's latency."""
    payload = completion_payload(served_model)
    workers = min(options.concurrency, options.requests)
    shares = [options.requests // workers + (index < options.requests % workers) for index in range(workers)]

    def work(index: int) -> list[Response]:
        base_url = base_urls[index % len(base_urls)]
        with contextlib.closing(HttpClient(base_url, request_timeout(options), host, api_key)) as client:
            client.request(READINESS_PATH)
            responses = []
            for _ in range(shares[index]):
                sent = time_left(options) > 0
                responses.append(
                    client.request(COMPLETIONS_PATH, payload, time_left(options)) if sent else Response(None, b"", 0.0, PAST_DEADLINE)
                )
            return responses

    def failed(index: int, exc: BaseException) -> list[Response]:
        # The system would not start a thread (a memory limit, a cap on a user's threads): this worker's
        # completions fail, as requests that were never sent, and the run goes on.
        return [Response(None, b"", 0.0, f"cannot start a thread: {exc}")] * shares[index]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: list[Any] = []
        for index in range(workers):
            try:
                futures.append(pool.submit(work, index))
            except RuntimeError as exc:
                futures.append(exc)
        batches = []
        for index, future in enumerate(futures):
            if isinstance(future, RuntimeError):
                batches.append(failed(index, future))
                continue
            try:
                batches.append(future.result())
            except RuntimeError as exc:  # one of the worker's own threads (its request's watchdog) did not start
                batches.append(failed(index, exc))
        return [response for batch in batches for response in batch]


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
        progress(f"{target.name}: GET {base_url}{LIVENESS_PATH}{where}")
        response = bounded_get(f"{base_url}{LIVENESS_PATH}", options, host)
        health[pod] = None if response.error is None and response.status == 200 else response.problem()
        progress(f"{target.name}: GET {base_url}{READINESS_PATH}{where}")
        response = bounded_get(f"{base_url}{READINESS_PATH}", options, host)
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


def _wait_seconds(options: Options, wanted: float) -> float:
    return max(min(wanted, time_left(options)), 0.0)


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
    checks.append(evaluate_pods(model, pods))
    pool = ((deployment["spec"].get("template") or {}).get("spec") or {}).get("nodeSelector", {}).get(GPU_POOL_LABEL)
    waiting = unscheduled(pods)
    if pool and waiting:
        checks.append(_capacity_check(model, namespace, kube, waiting, f"{GPU_POOL_PREFIX}{pool}"))
    return checks, selector, pods


def _capacity_check(model: str, namespace: str, kube: KubeApi, waiting: list[dict[str, Any]], node_pool: str) -> Check:
    """A pod waiting for a GPU node: what Karpenter said about it, and about launches for its NodePool."""
    try:
        pod_events = [
            e for p in waiting[:MAX_PODS_ASKED] for e in kube.events(namespace, f"involvedObject.name={p['metadata']['name']}")
        ]
        # A NodeClaim is cluster-scoped: its events are in the default namespace.
        claim_events = kube.events("default", f"reason={INSUFFICIENT_CAPACITY}")
    except KubeError as exc:
        return Check(model, "capacity", False, str(exc))
    return evaluate_capacity(model, waiting, pod_events, claim_events, node_pool)


# Enough to say why; a model waiting on many pods says the same of each.
MAX_PODS_ASKED = 3


def _restarts_check(
    model: str, namespace: str, kube: KubeApi, selector: str, before: list[dict[str, Any]], options: Options
) -> Check:
    try:
        after = kube.pods(namespace, selector)
    except KubeError as exc:
        return Check(model, "restarts", False, str(exc))
    return evaluate_restarts(model, before, after, datetime.now(timezone.utc), timedelta(seconds=options.restart_window))


def interceptor_endpoint(kube: KubeApi, entry: dict[str, Any]) -> tuple[str, str, int]:
    """Namespace, pod and port of the interceptor that an ExternalName entry Service aliases."""
    alias = SERVICE_HOST.fullmatch(str(entry["spec"].get("externalName", "")))
    if not alias:
        raise KubeError(f"Service {entry['metadata']['name']} points outside the cluster ({entry['spec'].get('externalName')})")
    namespace, name = alias["namespace"], alias["name"]
    service = kube.service(namespace, name)
    ports = entry["spec"].get("ports") or [{}]
    pods = kube.pods(namespace, label_selector(service["spec"].get("selector") or {}))
    pod, port = forward_targets(service, pods, ports[0].get("port", SERVING_PORT_NAME))[0]
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
    wake = _wait_seconds(options, options.wait_ready or WAKE_SECONDS)
    # The interceptor holds the waking request, silent, until the model serves: a shorter idle timeout
    # would drop it, and every retry after it, before that.
    with LocalForward(lambda: kube.open_stream(via, pod, port), max(options.timeout, wake)) as forward:
        progress(f"{model}: waking it through the interceptor, up to {wake:g} s")
        url = f"{forward.url}{READINESS_PATH}"
        reason = wait_until(
            lambda left: models_problem(http_request(url, left, host=host), target.served_model), wake, options.wait_interval
        )
        _report_wait(model, wake, reason)
        workload, selector, pods_before = _workload_checks(model, namespace, kube)
        checks += workload + http_checks(target, {None: forward.url}, options, host)
        checks[0] = _forward_check(checks[0], {pod: forward})
    if selector is not None:
        checks.append(_restarts_check(model, namespace, kube, selector, pods_before, options))
    return checks


def _forward_check(passed: Check, forwards: dict[str, LocalForward]) -> Check:
    """The port-forward check as it turned out: failed for a pod to which not one stream could be opened (every
    connection the checks made through it was closed at once, and they fail without saying why)."""
    failures = {pod: why for pod, forward in forwards.items() if (why := forward.failure()) is not None}
    if not failures:
        return passed
    detail = "; ".join(f"pod {pod}: no stream could be opened: {why}" for pod, why in failures.items())
    return Check(passed.model, passed.check, False, detail)


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
        wait = _wait_seconds(options, options.wait_ready)
        progress(f"{model}: waiting up to {wait:g} s for a Ready pod")
        reason = wait_until(lambda _: ready_pod_problem(kube, namespace, model), wait, options.wait_interval)
        _report_wait(model, wait, reason)

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
            local = {
                pod: forwards.enter_context(LocalForward(functools.partial(kube.open_stream, namespace, pod, port), options.timeout))
                for pod, port in endpoints
            }
            forward_check = len(checks) - 1
            checks += http_checks(target, {pod: forward.url for pod, forward in local.items()}, options)
            checks[forward_check] = _forward_check(checks[forward_check], local)
    if selector is not None:
        checks.append(_restarts_check(model, namespace, kube, selector, pods_before, options))
    return checks


def one_completion(base_url: str, served_model: str, timeout: float, api_key: Optional[str] = None) -> Response:
    """One chat completion on a connection of its own, with the key or, when none is given, without one."""
    with contextlib.closing(HttpClient(base_url, timeout, api_key=api_key)) as client:
        return client.request(COMPLETIONS_PATH, completion_payload(served_model))


def gateway_pending(response: Response) -> Optional[str]:
    """None once the gateway gives an answer that waiting will not change: a completion, or its 401 or 403."""
    return None if response.error is None and response.status in (401, 403) else completion_problem(response)


def gateway_checks(target: Target, options: Options, api_key: str, scope: Optional[KeyScope] = None) -> list[Check]:
    """A model through the gateway, as a client reaches it: refused without a key, allowed with it, then the
    completions and their p95, the same checks as on the direct path. With the key's scope, a model outside it
    must instead be refused with the key. A model that scales to zero is first woken, as through the interceptor:
    up to --wait-ready, WAKE_SECONDS without it (a refusal ends that wait at once)."""
    model, base_url, gateway_model = target.name, target.url, target.served_model
    wanted = options.wait_ready or (WAKE_SECONDS if target.scales_to_zero else 0.0)
    if wanted:
        wait = _wait_seconds(options, wanted)
        progress(f"{model}: waiting up to {wait:g} s for {gateway_model!r} to answer through the gateway")
        # The gateway holds a request for a model at zero while it wakes: each poll may take what is left of the wait.
        reason = wait_until(
            lambda left: gateway_pending(one_completion(base_url, gateway_model, left, api_key)), wait, options.wait_interval
        )
        _report_wait(model, wait, reason)
    progress(f"{model}: POST {base_url}{COMPLETIONS_PATH} for {gateway_model!r} and GET {base_url}{READINESS_PATH} without a key")
    keyless = {
        f"POST {COMPLETIONS_PATH}": one_completion(base_url, gateway_model, request_timeout(options)),
        # AI Gateway answers the model list itself: it must not come before the key check.
        f"GET {READINESS_PATH}": http_request(f"{base_url}{READINESS_PATH}", request_timeout(options)),
    }
    checks = [evaluate_keyless(model, keyless)]
    if scope is not None and model not in scope.models:
        progress(f"{model}: POST {base_url}{COMPLETIONS_PATH} for {gateway_model!r} with the key, expecting 403 for client {scope.client}")
        response = one_completion(base_url, gateway_model, request_timeout(options), api_key)
        return checks + [evaluate_refused(model, gateway_model, response, scope.client)]
    progress(f"{model}: POST {base_url}{COMPLETIONS_PATH} for {gateway_model!r} with the key")
    response = one_completion(base_url, gateway_model, request_timeout(options), api_key)
    allowed = evaluate_keyed(model, gateway_model, response, scope.client if scope else None)
    checks.append(allowed)
    if not allowed.passed:
        # Completions the key may not make can only fail the same way; say so once.
        skipped = "skipped: the key-allowed check failed"
        return checks + [Check(model, name, False, skipped) for name in ("completions", "latency-p95")]
    progress(f"{model}: {options.requests} chat completions through the gateway, {options.concurrency} at a time")
    return checks + evaluate_completions(
        model, chat_completions([base_url], gateway_model, options, api_key=api_key), options.p95_slo
    )


def _past_deadline(target: Target) -> Check:
    return Check(target.name, "deadline", False, "skipped: the run's --deadline passed before this model")


# A model name no gateway route serves: its answer shows what a client that asks for an unknown model meets.
UNKNOWN_MODEL = "vllm-platform-verify-unknown-model"


def unknown_model_check(base_url: str, options: Options, api_key: str) -> Check:
    """Once per run, with the key: a model the gateway does not serve gets its 404 in OpenAI's error shape."""
    if time_left(options) <= 0:
        return Check(GATEWAY_ROW, "unknown-model", False, "skipped: the run's --deadline passed")
    progress(f"POST {base_url}{COMPLETIONS_PATH} for {UNKNOWN_MODEL!r} with the key, expecting 404 {MODEL_NOT_FOUND}")
    return evaluate_unknown_model(UNKNOWN_MODEL, one_completion(base_url, UNKNOWN_MODEL, request_timeout(options), api_key))


def verify_via_gateway(target: Target, options: Options, api_key: str, scope: Optional[KeyScope] = None) -> list[Check]:
    """The gateway's endpoint is reached directly: no Kubernetes checks, no port-forward."""
    if time_left(options) <= 0:
        return [_past_deadline(target)]
    return gateway_checks(target, options, api_key, scope)


def verify_target(target: Target, options: Options, kube: Optional[KubeApi] = None) -> list[Check]:
    if time_left(options) <= 0:
        return [_past_deadline(target)]
    if kube is not None:
        return kubernetes_checks(target, options, kube)
    if options.wait_ready:
        wait = _wait_seconds(options, options.wait_ready)
        progress(f"{target.name}: waiting up to {wait:g} s for {READINESS_PATH} to list {target.served_model!r}")
        url = f"{target.url.rstrip('/')}{READINESS_PATH}"
        reason = wait_until(
            lambda left: models_problem(http_request(url, min(options.timeout, left)), target.served_model),
            wait,
            options.wait_interval,
        )
        _report_wait(target.name, wait, reason)
    return http_checks(target, {None: target.url}, options)
