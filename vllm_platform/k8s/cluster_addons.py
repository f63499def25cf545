"""What a created cluster runs before any model, as Helm values and manifests: the NVIDIA device plugin and
the default gp3 StorageClass (Karpenter's are in `k8s.karpenter`). Pure functions of plain values."""

from __future__ import annotations

from typing import Any

from vllm_platform.contract import GPU_NODE_SELECTOR, GPU_TAINT

EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
GP3_STORAGE_CLASS = "gp3"


def device_plugin_values() -> dict[str, Any]:
    return {
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [GPU_TAINT.any_value_toleration(), {"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "priorityClassName": "system-node-critical",
        # GPU feature discovery would pull node-feature-discovery along; the NodePools set the labels instead.
        "gfd": {"enabled": False},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
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
