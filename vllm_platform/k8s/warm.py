"""Pure builders of a pool's warm nodes: a placeholder Deployment that holds `warmNodes` spare nodes, with the
pool's vLLM images pulled, at a priority below every model's.

A new replica that finds no free node preempts a placeholder and starts at once on a node that already holds
its image; the placeholder, Pending again, makes Karpenter launch the next spare node. A placeholder never
preempts anything itself (`preemptionPolicy: Never`).
"""

from __future__ import annotations

from typing import Any, Sequence

from vllm_platform.contract import (
    GPU_POOL_LABEL,
    GPU_RESOURCE,
    GPU_TAINT,
    INSTANCE_LABEL,
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
)
from vllm_platform.k8s.workload import PULL_POLICY_SKIP, app_labels, container_security_context, pod_security_context
from vllm_platform.plan.plans import Plan, PoolPlan

PRIORITY_CLASS = "vllm-platform-warm-node"
# Below the default priority (0) every model's pod has, so any of them preempts a placeholder.
PRIORITY = -10
WARM_APP = "vllm-warm-node"
PLACEHOLDER_RESOURCES = {"cpu": "100m", "memory": "64Mi"}


def priority_class() -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": PRIORITY_CLASS, "labels": {PART_OF_LABEL: PART_OF}},
        "value": PRIORITY,
        "preemptionPolicy": "Never",
        "globalDefault": False,
        "description": "vllm-platform's warm-node placeholders: any model's pod preempts them.",
    }


def name(pool: PoolPlan) -> str:
    return f"warm-{pool.name}"


def _labels(pool: PoolPlan) -> dict[str, str]:
    return app_labels(WARM_APP, pool.name, "warm-node")


def _container(index: int, image: Any, gpus: int) -> dict[str, Any]:
    # The first holds the node's every GPU, so one placeholder takes one node; each pulls one of the pool's images.
    resources = {**PLACEHOLDER_RESOURCES, **({GPU_RESOURCE: str(gpus)} if index == 0 else {})}
    return {
        "name": f"image-{index}",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", "infinity"],
        "resources": {"requests": resources, "limits": resources},
        "securityContext": container_security_context(),
    }


def placeholder(plan: Plan, pool: PoolPlan, pool_images: Sequence[Any]) -> dict[str, Any]:
    """`pool_images`: the images of the pool's models as the nodes pull them (str or Pulumi Outputs), once each."""
    annotations = {
        "checkov.io/skip1": "CKV_K8S_8=a placeholder runs sleep and serves nothing: there is no liveness to probe",
        "checkov.io/skip2": "CKV_K8S_9=a placeholder runs sleep and serves nothing: no traffic waits on its readiness",
        "checkov.io/skip3": "CKV_K8S_43=the images of the pool's models, pinned to release tags as they are (validated)",
        "checkov.io/skip4": PULL_POLICY_SKIP,
        # Warm capacity is best effort: a spare node EC2 cannot supply must not fail `pulumi up`, nor hold it
        # for the boot of every spare node.
        "pulumi.com/skipAwait": "true",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name(pool), "namespace": plan.namespace, "labels": _labels(pool), "annotations": annotations},
        "spec": {
            "replicas": pool.warm_nodes,
            "selector": {"matchLabels": {NAME_LABEL: WARM_APP, INSTANCE_LABEL: pool.name}},
            "template": {
                "metadata": {"labels": _labels(pool)},
                "spec": {
                    "priorityClassName": PRIORITY_CLASS,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # Preempted, it should give its node up at once.
                    "terminationGracePeriodSeconds": 0,
                    "securityContext": pod_security_context(),
                    "nodeSelector": {GPU_POOL_LABEL: pool.name},
                    "tolerations": [GPU_TAINT.toleration()],
                    "containers": [_container(i, image, pool.gpus_per_node) for i, image in enumerate(pool_images)],
                },
            },
        },
    }
