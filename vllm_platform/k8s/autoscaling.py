"""How a model's replicas follow its load: KEDA on the queue (and the HTTP add-on's interceptor to wake it
from zero), or an HPA on CPU."""

from __future__ import annotations

from typing import Any

from vllm_platform.contract import SERVING_PORT
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


def queue_depth_query(model: ModelPlan) -> str:
    return f'sum(vllm:num_requests_waiting{{namespace="{model.namespace}",model_name="{model.served_name}"}})'


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
    """
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": queue_depth_query(model),
                "threshold": str(model.autoscaling.queue_depth_per_replica),
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
    if model.scales_to_zero:
        triggers.append(
            {"type": "external-push", "metadata": {"scalerAddress": http_scaler_address, "interceptorRoute": model.name}}
        )
        spec["cooldownPeriod"] = model.autoscaling.scale_to_zero_after_seconds
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": metadata(model), "spec": spec}


def horizontal_pod_autoscaler(model: ModelPlan) -> dict[str, Any]:
    target = {"type": "Utilization", "averageUtilization": model.autoscaling.target_cpu_utilization_percent}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(model),
        "spec": {
            "scaleTargetRef": _scale_target(model),
            "minReplicas": model.replicas.min,
            "maxReplicas": model.replicas.max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
            "behavior": _behavior(),
        },
    }
