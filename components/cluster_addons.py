"""What runs in a created cluster before any model: EKS add-ons, the default gp3 StorageClass,
the NVIDIA device plugin and cluster-autoscaler, with their IAM roles through EKS Pod Identity.

Helm values and the StorageClass are pure functions of plain values, tested without Pulumi.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import aws_policies, vllm_spec
from components.config import CLUSTER_AUTOSCALER_IMAGE_TAGS
from components.helm import Chart
from components.node_pools import SYSTEM_LABELS

KUBE_SYSTEM = "kube-system"
NVIDIA_DEVICE_PLUGIN = Chart(
    "nvidia-device-plugin", "0.20.0", "https://nvidia.github.io/k8s-device-plugin", "nvidia-device-plugin", KUBE_SYSTEM
)
CLUSTER_AUTOSCALER = Chart(
    "cluster-autoscaler", "9.59.0", "https://kubernetes.github.io/autoscaler", "cluster-autoscaler", KUBE_SYSTEM
)
CHARTS = (NVIDIA_DEVICE_PLUGIN, CLUSTER_AUTOSCALER)
CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
GP3_STORAGE_CLASS = "gp3"

# DaemonSets that a node needs to become Ready (networking, service routing, and credentials for
# the pods that follow): installed before any node group. The rest need nodes to run on.
ADDONS_BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
# metrics-server (an EKS community add-on) serves the CPU metrics an autoscaling.mode hpa-cpu HPA scales on.
ADDONS_AFTER_NODES = ("coredns", "aws-ebs-csi-driver", "metrics-server")
# The VPC CNI leaves NetworkPolicies unenforced unless asked; the models' default-deny relies on them.
# Its agent admits the node's own address, so kubelet's probes still reach the pods.
ADDON_CONFIGURATION: dict[str, dict[str, str]] = {"vpc-cni": {"enableNetworkPolicy": "true"}}


def device_plugin_values() -> dict[str, Any]:
    return {
        "nodeSelector": dict(vllm_spec.GPU_NODE_SELECTOR),
        "tolerations": [
            {"key": vllm_spec.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
        ],
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
        "nodeSelector": dict(SYSTEM_LABELS),
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


def eks_addon(
    name: str,
    cluster_name: pulumi.Input[str],
    kubernetes_version: pulumi.Input[str],
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.eks.Addon:
    # EKS's default version for the cluster's minor, not the newest build: without a version an add-on
    # stays where it was installed when the control plane is upgraded, and kube-proxy and coredns must
    # follow the minor. A preview shows the change when kubernetesVersion, or AWS's default, moves.
    version = aws.eks.get_addon_version_output(addon_name=name, kubernetes_version=kubernetes_version, most_recent=False)
    configuration = ADDON_CONFIGURATION.get(name)
    return aws.eks.Addon(
        name,
        cluster_name=cluster_name,
        addon_name=name,
        addon_version=version.version,
        configuration_values=json.dumps(configuration) if configuration else None,
        resolve_conflicts_on_create="OVERWRITE",
        resolve_conflicts_on_update="OVERWRITE",
        tags=tags,
        opts=opts,
    )


def pod_identity_role(
    name: str,
    cluster_name: pulumi.Input[str],
    namespace: str,
    service_account: str,
    tags: dict[str, str],
    parent: pulumi.Resource,
) -> tuple[aws.iam.Role, aws.eks.PodIdentityAssociation]:
    """An IAM role that only pods of this service account in this cluster receive."""
    role = aws.iam.Role(
        name,
        description=f"EKS Pod Identity: {namespace}/{service_account}",
        assume_role_policy=json.dumps(aws_policies.service_trust_policy(aws_policies.POD_IDENTITY_SERVICE)),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    association = aws.eks.PodIdentityAssociation(
        name,
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.arn,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return role, association


def storage_class(provider: k8s.Provider, parent: pulumi.Resource, depends_on: list[pulumi.Resource]) -> k8s.storage.v1.StorageClass:
    manifest = gp3_storage_class()
    return k8s.storage.v1.StorageClass(
        GP3_STORAGE_CLASS,
        metadata=manifest["metadata"],
        provisioner=manifest["provisioner"],
        parameters=manifest["parameters"],
        reclaim_policy=manifest["reclaimPolicy"],
        volume_binding_mode=manifest["volumeBindingMode"],
        allow_volume_expansion=manifest["allowVolumeExpansion"],
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=depends_on),
    )
