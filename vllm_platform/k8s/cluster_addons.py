"""What a created cluster runs before any model, as Helm values and manifests: the NVIDIA device plugin,
cluster-autoscaler, and the default gp3 StorageClass. Pure functions of plain values."""

from __future__ import annotations

from typing import Any

from vllm_platform.contract import GPU_NODE_SELECTOR, GPU_TAINT, SYSTEM_NODE_SELECTOR
from vllm_platform.pins import CLUSTER_AUTOSCALER, CLUSTER_AUTOSCALER_IMAGE_TAGS

CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
GP3_STORAGE_CLASS = "gp3"


def device_plugin_values() -> dict[str, Any]:
    return {
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [GPU_TAINT.any_value_toleration(), {"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "priorityClassName": "system-node-critical",
        # GPU feature discovery would pull node-feature-discovery along; the node groups set the labels instead.
        "gfd": {"enabled": False},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }


def cluster_autoscaler_values(cluster_name: str, region: str, kubernetes_version: str) -> dict[str, Any]:
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        # Finds the node groups by the tags EKS puts on their Auto Scaling groups.
        "autoDiscovery": {"clusterName": cluster_name},
        "fullnameOverride": CLUSTER_AUTOSCALER.release,
        "rbac": {"create": True, "serviceAccount": {"create": True, "name": CLUSTER_AUTOSCALER_SERVICE_ACCOUNT}},
        "nodeSelector": dict(SYSTEM_NODE_SELECTOR),
        "priorityClassName": "system-cluster-critical",
        "resources": {"requests": {"cpu": "100m", "memory": "300Mi"}, "limits": {"memory": "600Mi"}},
        "extraArgs": {
            # Pods name their pool, so the choice is rarely open; when it is, waste the least GPU.
            "expander": "least-waste",
            # GPU nodes take minutes to boot and pull a ~10 GB image: keep a node that just came up,
            # and one that went idle, for a while before paying that again.
            "scale-down-delay-after-add": "20m",
            "scale-down-unneeded-time": "20m",
            "scale-down-delay-after-delete": "5m",
            # A p4d can take this long to come up when capacity is tight; less makes the autoscaler give up early.
            "max-node-provision-time": "25m",
            # Serving pods opt out of eviction themselves (cluster-autoscaler.kubernetes.io/safe-to-evict:
            # "false"), so a node that serves a model is never drained to consolidate.
            "skip-nodes-with-local-storage": "false",
            "skip-nodes-with-system-pods": "true",
            "balance-similar-node-groups": "false",
            "cordon-node-before-terminating": "true",
        },
        "image": {"tag": CLUSTER_AUTOSCALER_IMAGE_TAGS[kubernetes_version]},
    }


def gp3_storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": GP3_STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true", "csi.storage.k8s.io/fstype": "ext4"},
        "reclaimPolicy": "Delete",
        # Bind where the pod lands: an EBS volume cannot follow a pod to another zone.
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }
