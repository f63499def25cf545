"""Pure builders of Karpenter's side of the GPU pools: its Helm values, one EC2NodeClass and one NodePool per
pool (karpenter.k8s.aws/v1, karpenter.sh/v1; Karpenter 1.14.1).

Each NodePool keeps the node contract of `vllm_platform.contract` (labels `gpu-pool: <pool>` and
`node-type: gpu`, the GPU taint), so the models' selectors and the GPU DaemonSets work unchanged. Values
that exist only at preview (the node role's name, the key's ARN, the queue's name) are placed, never read.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from vllm_platform import names
from vllm_platform.config.cluster import KARPENTER_REPLICAS
from vllm_platform.contract import (
    CAPACITY_TYPE_LABEL,
    CONSOLIDATE_WHEN_EMPTY,
    GPU_NODE_SELECTOR,
    GPU_POOL_LABEL,
    GPU_RESOURCE,
    GPU_TAINT,
    IMDS_HOP_LIMIT,
    INSTANCE_TYPE_LABEL,
    KARPENTER_DISCOVERY_TAG,
    KARPENTER_SERVICE_ACCOUNT,
    PART_OF,
    NODE_CLASS,
    NODE_POOL,
    PART_OF_LABEL,
    ROOT_DEVICE,
    SYSTEM_NODE_SELECTOR,
    ZONE_LABEL,
)
from vllm_platform.plan.plans import PoolPlan
from vllm_platform.plan.system import KARPENTER_CONTROLLER

# The NVIDIA device plugin chart's default node affinity asks for this label (normally set by
# node-feature-discovery, which this platform does not run).
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
# The root volume holds the OS; containerd's images, the pods' emptyDirs and logs sit on the instance store
# (instanceStorePolicy RAID0). Where parallel pull writes to EBS, nodeadm's guide asks for "at least 600MiB/s
# throughput. Below that value, you may see longer image pull times" (awslabs/amazon-eks-ami
# nodeadm/doc/examples.md); gp3 carries 0.25 MiB/s per provisioned IOPS, so 600 MiB/s needs 2400 IOPS at least.
GPU_ROOT_THROUGHPUT_MIBPS = 600
GPU_ROOT_IOPS = 6000
# nodeadm's parallel image pull (SOCI's parallel pull and unpack; AL2023 AMIs from v20250821): a ~10 GB vLLM
# image in well under a minute instead of two. One NodeConfig part of a MIME multipart document, which
# Karpenter merges with the NodeConfig it generates for the node to join.
FAST_IMAGE_PULL_USER_DATA = """MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="VLLM-PLATFORM"

--VLLM-PLATFORM
Content-Type: application/node.eks.aws

apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  featureGates:
    FastImagePull: true

--VLLM-PLATFORM--
"""
# At most one GPU node at a time is taken away on purpose (empty, or drifted to a new AMI); serving
# nodes are never consolidated (WhenEmpty), and each drain respects the models' PDBs. Expiry, which no budget
# holds, is off unless a pool sets expireAfter.
DISRUPTION_BUDGET = [{"nodes": "1"}]
# The controller, as Karpenter's getting-started guide sizes it.
CONTROLLER_RESOURCES = {"requests": KARPENTER_CONTROLLER.resources(), "limits": {"memory": KARPENTER_CONTROLLER.memory}}
# Tags Karpenter sets itself; an EC2NodeClass may not name them.
RESTRICTED_TAG_PREFIXES = ("eks:eks-cluster-name", "kubernetes.io/cluster/", "karpenter.sh/", "karpenter.k8s.aws/")


def pool_resource_name(pool: PoolPlan) -> str:
    """The name of the pool's NodePool, EC2NodeClass and placement group."""
    return f"{names.GPU_POOL_PREFIX}{pool.name}"


def gpu_node_labels(pool: PoolPlan) -> dict[str, str]:
    return {**GPU_NODE_SELECTOR, GPU_POOL_LABEL: pool.name, GPU_PRESENT_LABEL: "true"}


def karpenter_values(cluster_name: str, region: str, interruption_queue: Any) -> dict[str, Any]:
    return {
        "settings": {"clusterName": cluster_name, "interruptionQueue": interruption_queue},
        "serviceAccount": {"name": KARPENTER_SERVICE_ACCOUNT},
        # On the system nodes, one per node and zone (the chart's affinity and spread); never on a node it launched.
        "replicas": KARPENTER_REPLICAS,
        "nodeSelector": dict(SYSTEM_NODE_SELECTOR),
        "controller": {
            "resources": CONTROLLER_RESOURCES,
            # Otherwise it asks instance metadata, which the IMDS hop limit of 1 keeps from its pod.
            "env": [{"name": "AWS_REGION", "value": region}],
        },
    }


def _network_interfaces(pool: PoolPlan) -> Optional[list[dict[str, Any]]]:
    """With EFA: the primary interface, then one EFA-only interface per network card."""
    if not pool.efa_interfaces:
        return None
    primary = {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}
    efa = [{"networkCardIndex": card, "deviceIndex": 1, "interfaceType": "efa-only"} for card in range(pool.efa_interfaces)]
    return [primary, *efa]


def node_class(
    pool: PoolPlan,
    cluster_name: str,
    ami_alias: str,
    node_role: Any,
    volume_key_arn: Any,
    tags: dict[str, str],
    placement_group: Any = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # A pinned AL2023 release; Karpenter resolves its NVIDIA variant for GPU instance types.
        "amiSelectorTerms": [{"alias": ami_alias}],
        "role": node_role,
        "subnetSelectorTerms": [{"tags": {KARPENTER_DISCOVERY_TAG: cluster_name}}],
        "securityGroupSelectorTerms": [{"tags": {KARPENTER_DISCOVERY_TAG: cluster_name}}],
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": IMDS_HOP_LIMIT,
            "httpTokens": "required",
        },
        "blockDeviceMappings": [
            {
                "deviceName": ROOT_DEVICE,
                "rootVolume": True,
                "ebs": {
                    "volumeSize": f"{pool.root_volume_gib}Gi",
                    "volumeType": "gp3",
                    "iops": GPU_ROOT_IOPS,
                    "throughput": GPU_ROOT_THROUGHPUT_MIBPS,
                    "encrypted": True,
                    "kmsKeyID": volume_key_arn,
                    "deleteOnTermination": True,
                },
            }
        ],
        # Every type the catalog knows has NVMe instance store: one RAID0 over it holds containerd and kubelet.
        "instanceStorePolicy": "RAID0",
        "userData": FAST_IMAGE_PULL_USER_DATA,
        "tags": {k: v for k, v in tags.items() if not k.startswith(RESTRICTED_TAG_PREFIXES)},
    }
    if pool.capacity_reservations:
        spec["capacityReservationSelectorTerms"] = [dict(term) for term in pool.capacity_reservations]
    interfaces = _network_interfaces(pool)
    if interfaces:
        spec["networkInterfaces"] = interfaces
    if placement_group is not None:
        spec["placementGroupSelector"] = {"name": placement_group}
    return {
        "apiVersion": NODE_CLASS.api_version,
        "kind": NODE_CLASS.kind,
        "metadata": {"name": pool_resource_name(pool), "labels": {PART_OF_LABEL: PART_OF}},
        "spec": spec,
    }


def pool_limits(pool: PoolPlan) -> dict[str, str]:
    """maxSize nodes of the pool's widest type: Karpenter launches nothing past them."""
    return {GPU_RESOURCE: str(pool.gpus_per_node * pool.max_size), "cpu": str(pool.widest_vcpu * pool.max_size)}


def node_pool(pool: PoolPlan, zones: Sequence[str]) -> dict[str, Any]:
    requirements = [
        {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": list(pool.instance_types)},
        {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": list(pool.capacity_types)},
        {"key": ZONE_LABEL, "operator": "In", "values": list(zones)},
    ]
    return {
        "apiVersion": NODE_POOL.api_version,
        "kind": NODE_POOL.kind,
        "metadata": {"name": pool_resource_name(pool), "labels": {PART_OF_LABEL: PART_OF}},
        "spec": {
            "template": {
                "metadata": {"labels": gpu_node_labels(pool)},
                "spec": {
                    "nodeClassRef": {"group": NODE_CLASS.group, "kind": NODE_CLASS.kind, "name": pool_resource_name(pool)},
                    "requirements": requirements,
                    "taints": [GPU_TAINT.manifest()],
                    "expireAfter": pool.expire_after,
                    # Never cut a drain short: the longest of the pool's models, waiting out its PDB and its grace.
                    "terminationGracePeriod": f"{pool.drain_seconds}s",
                },
            },
            "disruption": {
                "consolidationPolicy": CONSOLIDATE_WHEN_EMPTY,
                "consolidateAfter": pool.consolidate_after,
                "budgets": [dict(budget) for budget in DISRUPTION_BUDGET],
            },
            "limits": pool_limits(pool),
        },
    }
