"""Pure builder of the platform's PrometheusRule: serving alerts per model and GPU health from DCGM.

Every alert carries a `summary`, a `description` and a `runbook` hint: the first thing to check.
"""

from __future__ import annotations

import math
from typing import Any

from vllm_platform.contract import MONITOR_SELECTOR_LABELS
from vllm_platform.k8s.autoscaling import queue_depth_query
from vllm_platform.k8s.dashboards import deployment_matcher, latency_quantile
from vllm_platform.plan.plans import ModelPlan, Plan

PROMETHEUS_RULE_NAME = "vllm-platform-alerts"
# Xid 79: "GPU has fallen off the bus" in NVIDIA's Xid catalogue; the GPU is gone until the node reboots.
XID_FALLEN_OFF_BUS = 79
NOT_READY_MINUTES = 15


def _alert(name: str, expr: str, duration: str, severity: str, annotations: dict[str, str], **labels: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr, "labels": {"severity": severity, **labels}, "annotations": annotations}
    if duration != "0m":
        rule["for"] = duration
    return rule


def model_rules(model: ModelPlan) -> list[dict[str, Any]]:
    """Rules whose thresholds come from this model's own config: its maximum replicas and queue target."""
    deployment = deployment_matcher(model)
    where = {"namespace": model.namespace, "model": model.name}
    rules = [_not_ready(model, deployment, where)]
    # Only KEDA scales on the queue; under the CPU HPA the queue target means nothing.
    if model.keda:
        rules.insert(0, _backlog_at_max(model, deployment, where))
    return rules


def _backlog_at_max(model: ModelPlan, deployment: str, where: dict[str, str]) -> dict[str, Any]:
    backlog = model.autoscaling.queue_depth_per_replica * model.replicas.max
    return _alert(
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
        **where,
    )


def not_ready_for(model: ModelPlan) -> str:
    """15 minutes, or longer where a normal cold start (a node from zero, then the load) takes longer:
    a model waking from zero, or a 70B loading, must not page."""
    return f"{max(NOT_READY_MINUTES, math.ceil(model.cold_start_seconds / 60))}m"


def _not_ready(model: ModelPlan, deployment: str, where: dict[str, str]) -> dict[str, Any]:
    duration = not_ready_for(model)
    return _alert(
        "VllmModelNotReady",
        # Wanted but not serving: a model that scaled to zero on purpose wants no replica.
        f"sum(kube_deployment_spec_replicas{{{deployment}}}) > 0 "
        f"and on() sum(kube_deployment_status_replicas_available{{{deployment}}}) < 1",
        duration,
        "critical",
        {
            "summary": f"{model.name}: no replica has been ready for {duration}, longer than a cold start takes",
            "description": f"Deployment {model.namespace}/{model.name} has no available pod; the model serves nothing.",
            "runbook": f"kubectl -n {model.namespace} describe pods -l app.kubernetes.io/instance={model.name}: "
            "Pending on nvidia.com/gpu means no GPU node (check the node autoscaler and pool maxSize); "
            "a failing startup probe means the model load is slow or crashing (kubectl logs -c vllm).",
        },
        **where,
    )


def platform_rules(plan: Plan) -> list[dict[str, Any]]:
    """Rules that hold for every model in the namespace, keyed by the series' own labels."""
    slo = plan.config.observability.time_to_first_token_slo_seconds
    kv_limit = plan.config.observability.kv_cache_usage_alert_ratio
    in_namespace = f'namespace="{plan.namespace}"'
    ttft_p95 = latency_quantile(0.95, "vllm:time_to_first_token_seconds", in_namespace, by="le, namespace, model_name")
    return [
        _alert(
            "VllmKvCacheNearlyFull",
            f"max by (namespace, model_name, pod) (vllm:kv_cache_usage_perc{{{in_namespace}}}) > {kv_limit:g}",
            "10m",
            "warning",
            {
                "summary": "{{ $labels.model_name }}: KV cache above " + f"{kv_limit:.0%}" + " on {{ $labels.pod }}",
                "description": "A full KV cache makes vLLM preempt running requests and queue new ones.",
                "runbook": "Add replicas (lower autoscaling.queueDepthPerReplica), lower maxModelLen, or raise "
                "gpuMemoryUtilization; check vllm:num_preemptions_total for preemptions.",
            },
        ),
        _alert(
            "VllmTimeToFirstTokenSloBreached",
            f"{ttft_p95} > {slo:g}",
            "10m",
            "warning",
            {
                "summary": "{{ $labels.model_name }}: time to first token p95 {{ $value | humanizeDuration }} "
                f"is above the {slo:g} s SLO",
                "description": "Prefill is slow or requests wait before their first token.",
                "runbook": "Check the waiting requests and KV-cache panels: a queue means too few replicas "
                "(see VllmQueueBacklogAtMaxReplicas); long prompts alone point to maxModelLen or chunked prefill.",
            },
        ),
    ]


def gpu_rules() -> list[dict[str, Any]]:
    # The exporter's Xid series holds the last Xid a GPU reported, until the exporter restarts: alert
    # on a new value, not on the value, or one old application Xid would fire for the node's lifetime.
    xid = "DCGM_FI_DEV_XID_ERRORS"
    gpu_capacity = 'kube_node_status_capacity{resource="nvidia_com_gpu"}'
    return [
        _alert(
            "GpuFallenOffBus",
            f"{xid} == {XID_FALLEN_OFF_BUS}",
            "0m",
            "critical",
            {
                "summary": "GPU {{ $labels.gpu }} on node {{ $labels.node }} has fallen off the bus (Xid 79)",
                "description": "The GPU no longer answers on PCIe; pods using it fail until the node is replaced.",
                "runbook": "Cordon and drain the node (kubectl cordon/drain {{ $labels.node }}), then terminate the "
                "instance so the node group replaces it; report the instance to AWS if it recurs.",
            },
        ),
        _alert(
            "GpuXidError",
            f"({xid} > 0 and changes({xid}[10m]) > 0) unless {xid} == {XID_FALLEN_OFF_BUS}",
            "0m",
            "warning",
            {
                "summary": "GPU {{ $labels.gpu }} on node {{ $labels.node }} reported Xid {{ $value }}",
                "description": "An Xid is an error the NVIDIA driver logged for this GPU in the last 10 minutes.",
                "runbook": "Look the code up in NVIDIA's Xid catalogue; 13, 31 and 43 are usually the application, "
                "48, 63, 64, 74, 92, 94 and 95 the hardware: for those drain the node and replace it.",
            },
        ),
        _alert(
            # DCGM cannot see every way a GPU is lost (Xid 79 among them, through NVML): the device plugin
            # withdrawing a GPU it found unhealthy, or the exporter no longer listing it, catches the rest.
            "GpuUnavailable",
            f'kube_node_status_allocatable{{resource="nvidia_com_gpu"}} < {gpu_capacity} '
            f"or max by (node) ({gpu_capacity}) > on(node) count by (node) (DCGM_FI_DEV_GPU_UTIL)",
            "5m",
            "critical",
            {
                "summary": "Node {{ $labels.node }} has fewer usable GPUs than it was built with",
                "description": "The NVIDIA device plugin marked a GPU unhealthy, or DCGM no longer reports one; "
                "pods cannot use it and a pod that needs every GPU of the node stays Pending.",
                "runbook": "kubectl describe node {{ $labels.node }} (Allocatable nvidia.com/gpu) and the device "
                "plugin's log on it; drain the node and terminate the instance so the node group replaces it.",
            },
        ),
    ]


def prometheus_rule(plan: Plan, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": PROMETHEUS_RULE_NAME, "namespace": namespace, "labels": dict(MONITOR_SELECTOR_LABELS)},
        "spec": {
            "groups": [
                {"name": "vllm-models", "rules": [r for m in plan.models for r in model_rules(m)]},
                {"name": "vllm-serving", "rules": platform_rules(plan)},
                *([{"name": "gpu-health", "rules": gpu_rules()}] if plan.runs_gpu_metrics else []),
            ]
        },
    }
