"""What verify checks, and the pure verdicts on what it finds: HTTP answers, Deployments, pods and restarts.

Every evaluator takes plain values (Responses, API JSON) and returns Checks; none does I/O, and none
raises on what a server or the API sent, whatever its shape.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping, Optional, Sequence

from tools.verify.client import Response, printable
from vllm_platform.config.platform import Verify
from vllm_platform.k8s.gateway import ERROR_RESPONSES
from vllm_platform.k8s.rollout import capacity_reasons, conditions, is_ready, live_pods, parse_time, pod_problem


class UsageError(Exception):
    """Bad flags or an unusable environment: exit 2, no checks run."""


@dataclass(frozen=True)
class Target:
    name: str  # the model's name in the stack: its Deployment and Service are named after it
    served_model: str  # the `model` requests name: vLLM's served name, or through the gateway its gatewayModelName
    url: str
    namespace: Optional[str] = None
    # Through the gateway, the first request to a model at zero waits for it to wake, so verify waits for that too.
    scales_to_zero: bool = False


@dataclass(frozen=True)
class KeyScope:
    """Whose key verify holds, as --client names it: a gateway.clients entry, and the `models[].name`s it lists.
    The key alone cannot say; the gateway allows it those models and refuses it the stack's others."""

    client: str
    models: frozenset[str]


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
    # The stack config's own default, where the stack sets none and no flag is given.
    p95_slo: float = Verify().p95_slo_seconds
    wait_ready: float = 0.0
    # How often --wait-ready asks again; short, because the deadline is what bounds the wait.
    wait_interval: float = 2.0
    restart_window: float = 900.0
    # Past this the run reports what it has found and stops; None: no limit beyond the per-request ones.
    deadline: Optional[float] = None


def parsed_json(body: bytes) -> Any:
    """The JSON document in a body, or None for anything that is not one (nesting too deep included)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def listed_models(body: bytes) -> Optional[list[Any]]:
    """The ids in a /v1/models answer ({"object": "list", "data": [{"id": ...}, ...]}); None if it is not one."""
    document = parsed_json(body)
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        return None
    return [entry.get("id") for entry in data if isinstance(entry, dict)]


def completion_problem(response: Response) -> Optional[str]:
    """None for a usable chat completion: a message with text content, or with a tool call; else why it is not one."""
    if not response.ok:
        return response.problem()
    document = parsed_json(response.body)
    choices = document.get("choices") if isinstance(document, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return f"HTTP {response.status} without a chat completion"
    content, tool_calls = message.get("content"), message.get("tool_calls")
    if not (isinstance(content, str) and content) and not (isinstance(tool_calls, list) and tool_calls and all(map(is_tool_call, tool_calls))):
        return f"HTTP {response.status} with a message that has neither text nor a tool call"
    return None


def is_tool_call(call: Any) -> bool:
    """An OpenAI tool call names the function it calls: {"type": "function", "function": {"name": ..., ...}}."""
    function = call.get("function") if isinstance(call, dict) else None
    return isinstance(function, dict) and isinstance(function.get("name"), str) and bool(function["name"])


def models_problem(response: Response, served_model: str) -> Optional[str]:
    """None when /v1/models answered and lists the served model, else why not."""
    if not response.ok:
        return response.problem()
    ids = listed_models(response.body)
    if ids is None:
        return "answer is not a model list"
    if served_model not in ids:
        names = [i for i in ids if isinstance(i, str)]
        others = len(ids) - len(names)
        shown = printable(", ".join(names)) + (f"{', ' if names else ''}{others} id(s) that are no string" if others else "")
        return f"{served_model!r} not listed (listed: {shown or 'none'})"
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


def evaluate_keyless(model: str, responses: Mapping[str, Response]) -> Check:
    """`key-required`: the gateway refuses every request without a key with 401, each `responses` key naming the
    request. Any other answer, a 200 above all, means anyone who reaches the endpoint can use the model, or
    read which models there are."""
    for request, response in responses.items():
        if response.error is not None:
            return Check(model, "key-required", False, f"{request}: {response.error}")
        if response.status != 401:
            return Check(
                model, "key-required", False, f"{request}: HTTP {response.status} without a key; the gateway must refuse it with 401"
            )
    return Check(model, "key-required", True, f"refused with 401 without a key: {', '.join(responses)}")


# The `error.code` of the gateway's own 403 and 404, as its responseOverride renders them in OpenAI's error shape.
def gateway_error_code(status: int) -> str:
    return str(json.loads(dict(ERROR_RESPONSES)[status])["error"]["code"])


MODEL_NOT_ALLOWED = gateway_error_code(403)
MODEL_NOT_FOUND = gateway_error_code(404)
# The row of the checks that are the gateway's own, for no one model.
GATEWAY_ROW = "(gateway)"
KEY_NOT_ACCEPTED = "401: the gateway does not accept this key"


def openai_error_code(body: bytes) -> Optional[str]:
    """The `code` of an OpenAI error body, {"error": {"message": ..., "type": ..., "code": ...}}; None for any other."""
    document = parsed_json(body)
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict) or not all(isinstance(error.get(k), str) for k in ("message", "type", "code")):
        return None
    return str(error["code"])


def evaluate_keyed(model: str, gateway_model: str, response: Response, client: Optional[str] = None) -> Check:
    """`key-allowed`: a chat completion with the key, for a model the key may use (every model without --client,
    which says whose key it is). A 403 is the gateway's answer for a model outside the key's list; a 401 means
    the key itself is refused."""
    if response.error is None and response.status == 403:
        hint = (
            f"; gateway.clients lists it for client {client}: is the key {client}'s?"
            if client
            else "; for a key scoped to some models, pass --client NAME (its gateway.clients entry) to expect 403 for the others"
        )
        return Check(model, "key-allowed", False, f"403: this key may not use {gateway_model}{hint}")
    if response.error is None and response.status == 401:
        return Check(model, "key-allowed", False, KEY_NOT_ACCEPTED)
    problem = completion_problem(response)
    if problem is not None:
        return Check(model, "key-allowed", False, problem)
    return Check(model, "key-allowed", True, f"this key may use {gateway_model}")


def gateway_refusal(
    row: str, check: str, response: Response, status: int, refused: str, answered: str
) -> Check:
    """`check` passes only on the gateway's own `status` in OpenAI's error shape (the code its responseOverride
    gives that status), so that an OpenAI client raises the matching error; `refused` says what passed, and an
    answer fails with `answered`."""
    expected = gateway_error_code(status)
    if response.error is not None:
        return Check(row, check, False, response.error)
    if response.status == status:
        code = openai_error_code(response.body)
        if code == expected:
            return Check(row, check, True, f"{status} {code}: {refused}")
        return Check(row, check, False, f"{response.problem()}; not the gateway's OpenAI error (code {expected})")
    if response.status == 401:
        return Check(row, check, False, KEY_NOT_ACCEPTED)
    if response.ok:
        return Check(row, check, False, f"HTTP {response.status}: {answered}")
    return Check(row, check, False, f"{response.problem()}; expected {status} {expected}: {refused}")


def evaluate_refused(model: str, gateway_model: str, response: Response, client: str) -> Check:
    """`key-refused`: a chat completion with the key for a model outside its client's list must get the gateway's
    403. An answer means the key can use a model its client may not."""
    return gateway_refusal(
        model, "key-refused", response, 403, f"client {client} may not use {gateway_model}",
        f"the key may use {gateway_model}, which client {client}'s list does not name",
    )  # fmt: skip


def evaluate_unknown_model(gateway_model: str, response: Response) -> Check:
    """`unknown-model`: a chat completion with the key for a model no route serves must get the gateway's 404, so
    that an OpenAI client raises its NotFoundError rather than meet a bare 404."""
    return gateway_refusal(
        GATEWAY_ROW, "unknown-model", response, 404, f"{gateway_model!r}, which no route serves",
        f"the gateway answered {gateway_model!r}, which no route serves",
    )  # fmt: skip


def endpoints_check(model: str, check: str, problems: dict[Optional[str], Optional[str]], success: str) -> Check:
    """One check over every endpoint: a lone URL's problem as it is, or how many pods passed and why others did not."""
    failing = {pod: problem for pod, problem in problems.items() if problem is not None}
    if None in problems:
        return Check(model, check, not failing, failing.get(None) or success)
    detail = f"{len(problems) - len(failing)}/{len(problems)} pods {success}"
    return Check(model, check, not failing, "; ".join([detail, *(f"{pod}: {why}" for pod, why in failing.items())]))


def evaluate_capacity(
    model: str, waiting: Sequence[dict[str, Any]], pod_events: Sequence[dict[str, Any]], claim_events: Sequence[dict[str, Any]], node_pool: str
) -> Check:
    """Why pods wait for a GPU node, in Karpenter's words (the same the rollout watch of `pulumi up` reports)."""
    if not waiting:
        return Check(model, "capacity", True, "no pod waits for a node")
    reasons = capacity_reasons(pod_events, claim_events, node_pool)
    names = ", ".join(p["metadata"]["name"] for p in waiting)
    detail = f"{len(waiting)} pod(s) wait for a node of NodePool {node_pool} ({names})"
    return Check(model, "capacity", False, detail + ("; " + "; ".join(reasons) if reasons else "; Karpenter has said nothing yet"))


def evaluate_deployment(model: str, deployment: dict[str, Any]) -> Check:
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    desired = spec.get("replicas", 1)
    available = status.get("availableReplicas", 0)
    updated = status.get("updatedReplicas", 0)
    detail = f"{available}/{desired} available, {updated} updated"
    progressing = conditions(deployment).get("Progressing", {})
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
            elif count and finished and now - parse_time(finished) <= window:
                problems.append(f"{where} restarted at {finished} ({why}); restart count {count}")
    gone = sorted({name for name, _ in counts_before} - {p["metadata"]["name"] for p in after})
    problems += [f"{name} went away during verification" for name in gone]
    if problems:
        return Check(model, "restarts", False, "; ".join(problems))
    minutes = f"{window.total_seconds() / 60:g}m"
    detail = f"none in the last {minutes}" + (f" ({total} older)" if total else "")
    return Check(model, "restarts", True, detail)


