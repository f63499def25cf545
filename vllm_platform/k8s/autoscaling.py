"""How a model's replicas follow its load: KEDA on the queue (and the HTTP add-on's interceptor to wake it
from zero), or an HPA on CPU."""

from __future__ import annotations

from typing import Any

from vllm_platform.contract import HORIZONTAL_POD_AUTOSCALER, SCALED_OBJECT, SERVING_PORT, vllm_metrics
from vllm_platform.k8s.workload import metadata
from vllm_platform.plan.plans import ModelPlan

# Serving is expensive to start: add capacity at once, give it back slowly.
SCALE_UP_BEHAVIOR = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 60},
        {"type": "Percent", "value": 100, "periodSeconds": 60},
    ],
}
SCALE_DOWN_BEHAVIOR = {
    "stabilizationWindowSeconds": 600,
    "selectPolicy": "Min",
    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
}
KEDA_POLLING_INTERVAL_SECONDS = 15
# What OpenAI clients wait by default: a long non-streamed generation must not be cut off sooner.
INTERCEPTOR_RESPONSE_HEADER_TIMEOUT = "600s"


# Failed polls before KEDA's fallback holds the replicas: a minute at the polling interval.
FALLBACK_FAILURE_THRESHOLD = 4


def queue_depth_query(model: ModelPlan) -> str:
    """One model's queue, summed over its pods: KEDA refuses a query that returns more than one series."""
    return f'sum({vllm_metrics.QUEUE_DEPTH}{{namespace="{model.namespace}",{vllm_metrics.MODEL_LABEL}="{model.served_name}"}})'


def _behavior() -> dict[str, Any]:
    return {"scaleUp": SCALE_UP_BEHAVIOR, "scaleDown": SCALE_DOWN_BEHAVIOR}


def _scale_target(model: ModelPlan) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": model.name}


def route_hosts(model: ModelPlan) -> list[str]:
    """Every Host a client may send for the model's Service, from the same namespace or from another."""
    return [model.name, f"{model.name}.{model.namespace}", f"{model.name}.{model.namespace}.svc", model.service_host]


def interceptor_route(model: ModelPlan) -> dict[str, Any]:
    """Routes the model's hosts to its pods, holding each request while the model wakes from zero."""
    return {
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": metadata(model),
        "spec": {
            "target": {"service": model.service_name, "port": SERVING_PORT},
            "rules": [{"hosts": route_hosts(model)}],
            "scalingMetric": {"concurrency": {"targetValue": model.autoscaling.concurrency_per_replica}},
            "timeouts": {
                # A request that wakes the model waits for one pod's cold start: a node, then the load.
                "readiness": f"{model.cold_start_seconds}s",
                "responseHeader": INTERCEPTOR_RESPONSE_HEADER_TIMEOUT,
            },
        },
    }


def scaled_object(model: ModelPlan, prometheus_url: Any, http_scaler_address: Any) -> dict[str, Any]:
    """Queue depth scales the replicas; a model that scales to zero is also woken by the interceptor's count.

    The addresses are strs, or Pulumi Outputs of them: they are placed, never read, so that a preview
    shows every other field of the spec even while the addresses are still unknown.

    With no pod there is no vllm:num_requests_waiting, so only the HTTP add-on, which holds the first
    request, can bring the first replica back. KEDA follows whichever trigger asks for more.

    What an empty answer means is decided here, not left to KEDA's default (`ignoreNullValues: true`,
    read as 0): a model that keeps replicas has series whenever it serves, so an empty answer is a broken
    scrape, an error, and after FALLBACK_FAILURE_THRESHOLD polls the fallback holds the replicas it has
    (at least replicas.min) rather than shrinking them. A model at zero has no series by design: there an
    empty answer is a queue of 0, and the HTTP add-on's push trigger wakes it. It gets no fallback, which
    would keep it from reaching zero (and does not engage for an external-push scaler; kedacore/keda#8056).
    """
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": queue_depth_query(model),
                "threshold": str(model.autoscaling.queue_depth_per_replica),
                "ignoreNullValues": "true" if model.scales_to_zero else "false",
            },
        }
    ]
    spec: dict[str, Any] = {
        "scaleTargetRef": _scale_target(model),
        "minReplicaCount": model.replicas.min,
        "maxReplicaCount": model.replicas.max,
        "pollingInterval": KEDA_POLLING_INTERVAL_SECONDS,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior()}},
        "triggers": triggers,
    }
    if not model.scales_to_zero:
        spec["fallback"] = {
            "failureThreshold": FALLBACK_FAILURE_THRESHOLD,
            "replicas": model.replicas.min,
            "behavior": "currentReplicasIfHigher",
        }
    if model.scales_to_zero:
        triggers.append(
            {"type": "external-push", "metadata": {"scalerAddress": http_scaler_address, "interceptorRoute": model.name}}
        )
        spec["cooldownPeriod"] = model.autoscaling.scale_to_zero_after_seconds
    return {"apiVersion": SCALED_OBJECT.api_version, "kind": SCALED_OBJECT.kind, "metadata": metadata(model), "spec": spec}


def horizontal_pod_autoscaler(model: ModelPlan) -> dict[str, Any]:
    target = {"type": "Utilization", "averageUtilization": model.autoscaling.target_cpu_utilization_percent}
    return {
        "apiVersion": HORIZONTAL_POD_AUTOSCALER.api_version,
        "kind": HORIZONTAL_POD_AUTOSCALER.kind,
        "metadata": metadata(model),
        "spec": {
            "scaleTargetRef": _scale_target(model),
            "minReplicas": model.replicas.min,
            "maxReplicas": model.replicas.max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
            "behavior": _behavior(),
        },
    }
