"""What a created cluster runs before any model, as Helm values and manifests: the NVIDIA device plugin, the
AWS Load Balancer Controller (for the gateway's NLB) and the default gp3 StorageClass (Karpenter's are in
`k8s.karpenter`). Pure functions of plain values."""

from __future__ import annotations

from typing import Any

from vllm_platform.contract import GPU_NODE_SELECTOR, GPU_TAINT, LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT, SYSTEM_NODE_SELECTOR
from vllm_platform.plan.system import CONTROLLER_REPLICAS, LOAD_BALANCER_CONTROLLER

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
        # The runtime's default seccomp profile: the plugin only talks to the driver (NVML) and the kubelet's socket.
        "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
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


def load_balancer_controller_values(cluster_name: str, region: str, vpc_id: str) -> dict[str, Any]:
    """aws-load-balancer-controller 3.5.0: two replicas with a PDB on the system nodes, told its cluster,
    region and VPC (else it asks instance metadata, which the hop limit of 1 keeps from pods). The proxies'
    Service names its class itself, so no webhook must mutate every Service; no Ingress class, as nothing
    here makes an ALB."""
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "serviceAccount": {"create": True, "name": LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT},
        "replicaCount": CONTROLLER_REPLICAS,
        "podDisruptionBudget": {"maxUnavailable": 1},
        "resources": {"requests": LOAD_BALANCER_CONTROLLER.resources(), "limits": {"memory": "512Mi"}},
        "nodeSelector": dict(SYSTEM_NODE_SELECTOR),
        # The chart's own settings, hardened to the restricted profile: the controller needs no capability.
        "podSecurityContext": {"fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceMutatorWebhook": False,
        "createIngressClassResource": False,
    }
