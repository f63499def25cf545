"""Pure builder of the platform's PrometheusRule: each model's availability, serving and autoscaling alerts,
the gateway's, and (from k8s/cluster_alerts.py) GPU health and Karpenter's launches where it runs.

Label conventions, the same on every rule: a model alert carries `namespace`, `model` (its name in the
stack, its Deployment's) and `model_name` (what vLLM's series carry), whatever its expression keeps; a GPU
alert is aggregated to `node`, `gpu` and `UUID`, so that a GPU whose pod changes stays one alert. Every
alert has a `summary`, a `description` and a `runbook` hint: the first thing to check.

The rules run on the cluster's Prometheus 3 and are tested on Debian's Prometheus 2.42 (promtool): they
use nothing 2.42 lacks.
"""

from __future__ import annotations

import math
from typing import Any

from vllm_platform.config.observability import Observability
from vllm_platform.contract import GATEWAY_NAMESPACE, MONITOR_SELECTOR_LABELS, READINESS_PATH, SERVING_CONTAINER, vllm_metrics
from vllm_platform.k8s.autoscaling import queue_depth_query
from vllm_platform.k8s.cluster_alerts import alert, gpu_rules, karpenter_rules
from vllm_platform.k8s.dashboards import client_tokens_per_minute, deployment_matcher, pod_matcher, vllm_matcher, within_share
from vllm_platform.plan.plans import GatewayPlan, ModelPlan, Plan

PROMETHEUS_RULE_NAME = "vllm-platform-alerts"
NOT_READY_MINUTES = 15
# A model that served and lost every pod: an outage, paged within minutes rather than after a cold start.
OUTAGE_FOR = "2m"
# The least a replica wanted for longer than a cold start may be missing before that is worth a warning.
PARTIAL_MINUTES = 5
# In back-off within every 10 minutes, for 15. kube-prometheus-stack's KubePodCrashLooping looks back 5 minutes,
# which a vLLM that loads (or serves) for more than 5 minutes between two crashes slips through; 10 is the most
# that a single crash's back-off (5 minutes at most) still leaves short of the `for`.
CRASH_LOOP_WINDOW, CRASH_LOOP_FOR = "10m", "15m"
# Through how long a gap kube-state-metrics' last sample stands: a missed scrape or two, or its pod replaced.
KSM_GAP = "2m"
# The kubelet's longest back-off between two restarts of a container (MaxContainerBackOff, 5 minutes), and
# the restarts within a crash cycle's window that make a loop rather than a crash.
CRASH_BACKOFF_SECONDS = 300
CRASH_LOOP_RESTARTS = 3
RATE_WINDOW = "5m"
# The multiwindow, multi-burn-rate alerts of Google's SRE workbook (ch. 5, "Alerting on SLOs"): a page when
# 2% of a 30-day error budget burns in an hour, a warning when 5% burns in six.
FAST_BURN = (14.4, "1h", "5m")
SLOW_BURN = (6.0, "6h", "30m")
# vLLM answers "error" with a 500; "abort" is a client that stopped waiting.
ERROR_RATIO = 0.01
ABORT_RATIO = 0.1
KEDA_SCALER_ERRORS = "keda_scaled_object_errors_total"
# KEDA labels its series with the ScaledObject's namespace; its chart's ServiceMonitors keep the target's
# labels over the scraped ones (no honorLabels), so Prometheus stores that one as exported_namespace and
# `namespace` is keda's own.
KEDA_OBJECT_NAMESPACE = "exported_namespace"


def model_labels(model: ModelPlan) -> dict[str, str]:
    return {"namespace": model.namespace, "model": model.name, "model_name": model.served_name}


def not_ready_for(model: ModelPlan) -> str:
    """15 minutes, or longer where a normal cold start (a node from zero, then the load) takes longer:
    a model waking from zero, or a 70B loading, must not page."""
    return f"{max(NOT_READY_MINUTES, math.ceil(model.cold_start_seconds / 60))}m"


def _minutes(duration: str) -> int:
    return int(duration.removesuffix("m"))


def outage_window(model: ModelPlan) -> str:
    """How far back `VllmModelDown` looks, when a model has no pod, for it serving: an outage's start. Past the
    not-ready alert's `for`, so that no outage falls between the two; once firing, it holds itself until the
    model serves again (see its expression), however long the outage lasts."""
    return f"{_minutes(not_ready_for(model)) + 5}m"


def partial_for(model: ModelPlan) -> str:
    """How long a replica may be missing before `VllmReplicasUnavailable` warns: a pod replaced, on a node
    that may come from zero, takes the model's whole cold start (over 18 minutes for prod's 70B), and must not
    warn."""
    return f"{max(PARTIAL_MINUTES, math.ceil(model.cold_start_seconds / 60))}m"


def crash_loop_restarts_window(model: ModelPlan) -> str:
    """A window that holds CRASH_LOOP_RESTARTS restarts of the slowest crash loop (a vLLM that its startup
    probe kills after the whole startup budget, restarted each time after the longest back-off), and a cycle
    more: a loop a little slower (the container's creation, the probe's period) still has that many in every
    window, so that the alert's `for` is not reset each time the oldest falls out before the next comes. A
    70B's budget runs past the back-off window, so its loop never shows as a back-off in every 5 minutes."""
    cycle = model.startup_budget_seconds + CRASH_BACKOFF_SECONDS
    return f"{math.ceil((CRASH_LOOP_RESTARTS + 1) * cycle / 60)}m"


def availability_rules(model: ModelPlan, step: str) -> list[dict[str, Any]]:
    """`step`: the rules' evaluation interval, at which the subqueries sample (a coarser step would miss a
    scale to zero and back within it)."""
    deployment, labels = deployment_matcher(model), model_labels(model)
    # kube-state-metrics' series read through a missed scrape (a stale marker, which last_over_time skips) and
    # one series however many kube-state-metrics report it (max; two while one is replaced): a single failed
    # scrape would otherwise end every alert below and start their `for` again, resolving a page mid-outage.
    desired = f"max(last_over_time(kube_deployment_spec_replicas{{{deployment}}}[{KSM_GAP}]))"
    available = f"max(last_over_time(kube_deployment_status_replicas_available{{{deployment}}}[{KSM_GAP}]))"
    window = outage_window(model)
    not_ready = not_ready_for(model)
    # Wanted, and no pod serving: a model that scaled to zero on purpose wants no replica.
    down = f"{available} < 1 and on() {desired} > 0"
    describe = f"kubectl -n {model.namespace} describe pods -l app.kubernetes.io/instance={model.name}"
    return [
        alert(
            "VllmModelDown",
            # Served within the window, and later than it was last scaled to zero: a wake from zero that has not
            # served yet is a cold start, while one that served and then lost every pod is an outage. Then,
            # while still wanted and not serving, its own firing state holds it past the window (ALERTS, a series
            # Prometheus 2 and 3 store like any other, so a restart within its 5-minute lookback keeps it): one
            # page per outage, resolved only when a pod serves again, where the window alone would resolve it
            # mid-outage and let the not-ready alert, no longer muted, page the same outage a second time.
            # `keep_firing_for` would only delay that by a fixed time.
            f"{down} and on() max_over_time(timestamp({available} >= 1)[{window}:{step}]) "
            f"> on() (max_over_time(timestamp({desired} == 0)[{window}:{step}]) or on() vector(0)) "
            f'or {down} and on() count(ALERTS{{alertname="VllmModelDown",alertstate="firing",'
            f'namespace="{model.namespace}",model="{model.name}"}})',
            OUTAGE_FOR,
            "critical",
            {
                "summary": f"{model.name}: every replica stopped serving",
                "description": f"Deployment {model.namespace}/{model.name} served within {window} of losing its last "
                "available pod, and wants replicas: an outage, not a cold start. It fires until a pod serves again.",
                "runbook": f"{describe}; kubectl -n {model.namespace} logs deploy/{model.name} -c vllm --previous: "
                "a crash (OOMKilled, CUDA error), an evicted pod, or the GPU node gone (check the gpu-health alerts).",
            },
            labels,
        ),
        alert(
            "VllmModelNotReady",
            down,
            not_ready,
            "critical",
            {
                "summary": f"{model.name}: no replica has been ready for {not_ready}, longer than a cold start takes",
                "description": f"Deployment {model.namespace}/{model.name} has no available pod; the model serves nothing.",
                "runbook": f"{describe}: Pending on nvidia.com/gpu means no GPU node (check the node autoscaler and "
                "the pool's maxSize); a failing startup probe means the model load is slow or crashing (kubectl logs -c vllm).",
            },
            labels,
        ),
        alert(
            "VllmReplicasUnavailable",
            # Fewer serve than have been wanted all through a cold start: a scale-up still in its cold start,
            # or one step of it after another, is not a shortfall yet; and for a cold start (partial_for): a
            # replica lost and replaced, which the wanted count never shows, is not one either.
            f"{available} < max(min_over_time(kube_deployment_spec_replicas{{{deployment}}}[{not_ready}])) "
            f"and on() {available} >= 1",
            partial_for(model),
            "warning",
            {
                "summary": f"{model.name}: only {{{{ $value }}}} replicas serve, fewer than it has wanted for {not_ready}",
                "description": "Some replicas have not become available for longer than a new one takes: the model "
                "serves with less capacity than its autoscaler asked for.",
                "runbook": f"{describe}: Pending pods mean the GPU pool is at maxSize or EC2 has no capacity for its "
                "types; crash-looping ones, see VllmContainerCrashLooping.",
            },
            labels,
        ),
        alert(
            "VllmContainerCrashLooping",
            # kube-state-metrics has the series only while the container waits (a back-off of 5 min at most),
            # not while vLLM runs between two crashes: a crash loop is a series that keeps coming back, as
            # kube-prometheus-stack's KubePodCrashLooping reads it. A vLLM that runs longer than that between
            # crashes (a 70B loading for up to its startup budget) leaves gaps in it: its restarts tell instead,
            # while the container is not Ready, so the alert ends once vLLM serves, not when the old restarts
            # leave their long window.
            f"max by (pod) (max_over_time(kube_pod_container_status_waiting_reason{{{pod_matcher(model)},"
            f'container="{SERVING_CONTAINER}",reason="CrashLoopBackOff"}}[{CRASH_LOOP_WINDOW}])) >= 1 '
            f"or max by (pod) (increase(kube_pod_container_status_restarts_total{{{pod_matcher(model)},"
            f'container="{SERVING_CONTAINER}"}}[{crash_loop_restarts_window(model)}])) >= {CRASH_LOOP_RESTARTS} '
            f"and on(pod) max by (pod) (kube_pod_container_status_ready{{{pod_matcher(model)},"
            f'container="{SERVING_CONTAINER}"}}) == 0',
            CRASH_LOOP_FOR,
            "warning",
            {
                "summary": f"{model.name}: pod {{{{ $labels.pod }}}} is crash-looping",
                "description": "vLLM in this pod exits and restarts again and again; its replica never serves.",
                "runbook": f"kubectl -n {model.namespace} logs {{{{ $labels.pod }}}} -c vllm --previous: out of GPU "
                "memory at load (lower maxModelLen or gpuMemoryUtilization), a gated checkpoint without hfToken, "
                "or a flag vLLM refuses.",
            },
            labels,
        ),
        alert(
            "VllmMetricsMissing",
            # Scrapes that fail, or succeed without vLLM's series: every other alert of the model, and KEDA's
            # view of its queue, go blind.
            f"{available} > (count(up{{{pod_matcher(model)}}} == 1) or on() vector(0)) "
            f"or ({available} > 0 unless on() count({vllm_metrics.QUEUE_DEPTH}{{{vllm_matcher(model)}}}))",
            "10m",
            "critical",
            {
                "summary": f"{model.name}: Prometheus gets no vLLM metrics from some of its serving pods",
                "description": "Available pods that Prometheus cannot scrape, or whose scrape holds no "
                f"{vllm_metrics.QUEUE_DEPTH} for model_name {model.served_name}: the model's alerts are blind, "
                "and its autoscaler holds its replicas (KEDA's fallback) instead of following load.",
                "runbook": f"kubectl -n monitoring port-forward svc/kube-prometheus-stack-prometheus 9090, then Status > "
                f"Targets for serviceMonitor/{model.namespace}/{model.name}; a renamed served model name changes model_name.",
            },
            labels,
        ),
    ]


def autoscaling_rules(model: ModelPlan) -> list[dict[str, Any]]:
    """Only KEDA scales on the queue; under the CPU HPA the queue target and the scaler mean nothing."""
    if not model.keda:
        return []
    deployment, labels = deployment_matcher(model), model_labels(model)
    backlog = model.autoscaling.queue_depth_per_replica * model.replicas.max
    return [
        alert(
            "VllmQueueBacklogAtMaxReplicas",
            f"{queue_depth_query(model)} > {backlog} "
            f"and on() sum(kube_deployment_spec_replicas{{{deployment}}}) >= {model.replicas.max}",
            "10m",
            "warning",
            {
                "summary": f"{model.name}: requests queue while already at its maximum of {model.replicas.max} replicas",
                "description": f"{{{{ $value }}}} requests wait for {model.name}, more than {backlog} "
                f"({model.autoscaling.queue_depth_per_replica} per replica at max {model.replicas.max}); "
                "the autoscaler can add no more.",
                "runbook": f"Raise models[{model.name}].replicas.max and the GPU pool's maxSize, or shed load; "
                "check the KV-cache panel, a full cache also makes requests wait.",
            },
            labels,
        ),
        alert(
            "KedaScalerErrors",
            # Without an available pod there is no queue series, which a model above zero reads as an error
            # (ignoreNullValues false): a first cold start, or an outage that VllmModelDown already tells.
            f'sum(rate({KEDA_SCALER_ERRORS}{{{KEDA_OBJECT_NAMESPACE}="{model.namespace}",scaledObject="{model.name}"}}'
            f"[{RATE_WINDOW}])) > 0 unless on() sum(kube_deployment_status_replicas_available{{{deployment}}}) < 1",
            "10m",
            "warning",
            {
                "summary": f"{model.name}: KEDA cannot read its scaling metric",
                "description": "The ScaledObject's triggers fail (Prometheus unreachable, or the queue's series "
                "gone); KEDA holds the replicas at its fallback and no longer follows load.",
                "runbook": f"kubectl -n {model.namespace} describe scaledobject {model.name} (conditions, events) and "
                "kubectl -n keda logs deploy/keda-operator.",
            },
            labels,
        ),
    ]


def _bad_ratio(histogram: str, bound: float, matcher: str, window: str) -> str:
    """The fraction of observations above `bound` over the window; NaN (never firing) with no traffic. The
    dashboard shows its complement, the same expression (within_share)."""
    return f"(1 - {within_share(histogram, bound, matcher, window)})"


def serving_rules(model: ModelPlan, obs: Observability) -> list[dict[str, Any]]:
    """What vLLM's own series say: latency against the SLOs, errors, aborts, preemptions and the KV cache."""
    vllm, labels = vllm_matcher(model), model_labels(model)
    objective = obs.latency_objective
    budget = 1 - objective
    ttft = obs.time_to_first_token_slo_seconds
    finished = vllm_metrics.FINISHED_REQUESTS
    share = f"{objective:.0%}"

    def bad(histogram: str, bound: float, window: str) -> str:
        return _bad_ratio(histogram, bound, vllm, window)

    def burn(rate: tuple[float, str, str]) -> str:
        factor, long, short = rate
        return " and ".join(f"{bad(vllm_metrics.TIME_TO_FIRST_TOKEN, ttft, w)} > {factor * budget:g}" for w in (long, short))

    def finished_ratio(reason: str) -> str:
        return (
            f'sum(rate({finished}{{{vllm},finished_reason="{reason}"}}[{RATE_WINDOW}])) '
            f"/ sum(rate({finished}{{{vllm}}}[{RATE_WINDOW}]))"
        )

    ttft_annotations = {
        "description": f"More than {1 - objective:.0%} of requests wait longer than {ttft:g} s for their first "
        "token, the error budget burning {{ $value | humanizePercentage }} of requests at a time.",
        "runbook": "Check the waiting requests and KV-cache panels: a queue means too few replicas "
        "(see VllmQueueBacklogAtMaxReplicas); long prompts alone point to maxModelLen or chunked prefill.",
    }
    return [
        alert(
            "VllmTimeToFirstTokenBudgetBurning",
            burn(FAST_BURN),
            "2m",
            "critical",
            {"summary": f"{model.name}: time to first token misses its {ttft:g} s SLO fast "
             f"({FAST_BURN[0]:g}× the error budget over {FAST_BURN[1]})", **ttft_annotations},
            labels,
        ),
        alert(
            "VllmTimeToFirstTokenSloBreached",
            burn(SLOW_BURN),
            "15m",
            "warning",
            {"summary": f"{model.name}: time to first token misses its {ttft:g} s SLO "
             f"({SLOW_BURN[0]:g}× the error budget over {SLOW_BURN[1]})", **ttft_annotations},
            labels,
        ),
        alert(
            "VllmInterTokenLatencyHigh",
            f"{bad(vllm_metrics.INTER_TOKEN_LATENCY, obs.inter_token_latency_slo_seconds, RATE_WINDOW)} > {budget:g}",
            "15m",
            "warning",
            {
                "summary": f"{model.name}: fewer than {share} of tokens come within "
                f"{obs.inter_token_latency_slo_seconds:g} s of the one before",
                "description": "Decoding is slow: too many sequences share a replica, or preemptions recompute them.",
                "runbook": "Check VllmPreempting and the KV-cache panel; lower autoscaling.queueDepthPerReplica so "
                "replicas are added sooner, or cap --max-num-seqs in extraArgs.",
            },
            labels,
        ),
        alert(
            "VllmRequestLatencyHigh",
            f"{bad(vllm_metrics.END_TO_END_LATENCY, obs.request_latency_slo_seconds, RATE_WINDOW)} > {budget:g}",
            "15m",
            "warning",
            {
                "summary": f"{model.name}: fewer than {share} of requests finish within {obs.request_latency_slo_seconds:g} s",
                "description": "Requests take long end to end: queueing, slow decoding, or long generations.",
                "runbook": "Compare the time-to-first-token and inter-token panels: the slow one is where the time goes.",
            },
            labels,
        ),
        alert(
            "VllmRequestErrors",
            f"{finished_ratio('error')} > {ERROR_RATIO:g}",
            "10m",
            "warning",
            {
                "summary": f"{model.name}: {{{{ $value | humanizePercentage }}}} of requests end in an engine error",
                "description": "vLLM answers these with 500: a request-level engine failure such as a KV transfer.",
                "runbook": f"kubectl -n {model.namespace} logs deploy/{model.name} -c vllm | grep -i error",
            },
            labels,
        ),
        alert(
            "VllmServerErrors",
            # Clients' requests only: the readiness and startup probes' GET /v1/models would dilute the ratio.
            f'sum(rate({vllm_metrics.HTTP_REQUESTS}{{{pod_matcher(model)},handler!="{READINESS_PATH}",status="5xx"}}[{RATE_WINDOW}])) '
            f'/ sum(rate({vllm_metrics.HTTP_REQUESTS}{{{pod_matcher(model)},handler!="{READINESS_PATH}"}}[{RATE_WINDOW}])) '
            f"> {ERROR_RATIO:g}",
            "10m",
            "warning",
            {
                "summary": f"{model.name}: {{{{ $value | humanizePercentage }}}} of its API server's answers are 5xx",
                "description": "Every 5xx the server sends, those raised outside the engine included (a dead or "
                "restarting engine, a request failed before it), which the engine's own error count never sees.",
                "runbook": f"kubectl -n {model.namespace} logs deploy/{model.name} -c vllm | grep -iE 'error|exception'",
            },
            labels,
        ),
        alert(
            "VllmRequestsAborted",
            f"{finished_ratio('abort')} > {ABORT_RATIO:g}",
            "15m",
            "warning",
            {
                "summary": f"{model.name}: {{{{ $value | humanizePercentage }}}} of requests are abandoned by their clients",
                "description": "Clients stop waiting before the answer: their timeout is shorter than the latency "
                "they get, usually because requests queue.",
                "runbook": "Check the latency alerts and the queue; raise the clients' timeouts or add replicas.",
            },
            labels,
        ),
        alert(
            "VllmPreempting",
            f"sum(rate({vllm_metrics.PREEMPTIONS}{{{vllm}}}[{RATE_WINDOW}])) > 0",
            "15m",
            "warning",
            {
                "summary": f"{model.name}: vLLM keeps preempting running requests",
                "description": "The KV cache is too small for the sequences admitted: preempted requests are "
                "recomputed, and every request slows down.",
                "runbook": "Lower maxModelLen or --max-num-seqs, raise gpuMemoryUtilization, or add replicas.",
            },
            labels,
        ),
        alert(
            "VllmKvCacheNearlyFull",
            f"max by (pod) ({vllm_metrics.KV_CACHE_USAGE}{{{vllm}}}) > {obs.kv_cache_usage_alert_ratio:g}",
            "10m",
            "warning",
            {
                "summary": f"{model.name}: KV cache above {obs.kv_cache_usage_alert_ratio:.0%} on {{{{ $labels.pod }}}}",
                "description": "A full KV cache makes vLLM preempt running requests and queue new ones.",
                "runbook": "Add replicas (lower autoscaling.queueDepthPerReplica), lower maxModelLen, or raise "
                "gpuMemoryUtilization; check VllmPreempting.",
            },
            labels,
        ),
    ]


def model_rules(model: ModelPlan, obs: Observability) -> list[dict[str, Any]]:
    return [*availability_rules(model, obs.prometheus.scrape_interval), *autoscaling_rules(model), *serving_rules(model, obs)]


# The budget share used over a sustained 5 minutes that warns before the client meets 429s.
NEAR_LIMIT_SHARE = 0.8
GATEWAY_5XX_RATIO = 0.05


def gateway_rules(gateway: GatewayPlan) -> list[dict[str, Any]]:
    """A client near its budget (before its requests meet 429), and the gateway's own 5xx rate."""
    near = [
        alert(
            "GatewayClientNearTokenLimit",
            f"{client_tokens_per_minute(client)} > {NEAR_LIMIT_SHARE} * {client.tokens_per_minute}",
            "5m",
            "warning",
            {
                "summary": f"Client {client.name} uses over {NEAR_LIMIT_SHARE:.0%} of its token budget",
                "description": f"{client.name} draws {{{{ $value | humanize }}}} {client.counts} tokens a minute of its "
                f"{client.tokens_per_minute}; past the budget the gateway answers 429.",
                "runbook": f"Raise gateway.clients[{client.name}].tokensPerMinute, or ask the client to slow down.",
            },
            {"client": client.name},
        )
        for client in gateway.clients
    ]
    downstream = f'{{namespace="{GATEWAY_NAMESPACE}",envoy_http_conn_manager_prefix=~"http-.*"}}'
    errors = (
        f'sum(rate(envoy_http_downstream_rq_xx{{namespace="{GATEWAY_NAMESPACE}",envoy_http_conn_manager_prefix=~"http-.*",'
        f'envoy_response_code_class="5"}}[5m])) / sum(rate(envoy_http_downstream_rq_total{downstream}[5m]))'
    )
    return [
        *near,
        alert(
            "GatewayServerErrors",
            f"{errors} > {GATEWAY_5XX_RATIO}",
            "5m",
            "critical",
            {
                "summary": "Over 5 % of the gateway's answers are 5xx",
                "description": "Clients of every model through the gateway get server errors: {{ $value | humanizePercentage }}.",
                "runbook": "kubectl -n envoy-gateway-system logs of the envoy proxies and ai-gateway-controller; check each "
                "model's VllmModelDown and the Backends' status.",
            },
            {},
        ),
    ]


def prometheus_rule(plan: Plan, namespace: str) -> dict[str, Any]:
    obs = plan.config.observability
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": PROMETHEUS_RULE_NAME, "namespace": namespace, "labels": dict(MONITOR_SELECTOR_LABELS)},
        "spec": {
            "groups": [
                *({"name": f"vllm-{m.name}", "rules": model_rules(m, obs)} for m in plan.models),
                *([{"name": "gpu-health", "rules": gpu_rules()}] if plan.runs_gpu_metrics else []),
                *([{"name": "llm-gateway", "rules": gateway_rules(plan.gateway)}] if plan.gateway is not None else []),
                *([{"name": "karpenter", "rules": karpenter_rules()}] if plan.runs_karpenter else []),
            ]
        },
    }
