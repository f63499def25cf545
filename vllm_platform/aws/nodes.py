"""EKS managed node groups: the system group and one group per GPU pool, with what the autoscaler reads.

They honour the node contract of `vllm_platform.contract`: every node of pool P carries the labels
`gpu-pool: P` and `node-type: gpu` and the GPU taint; system nodes carry `node-type: system` and no
taint. The pure functions below (labels, tags, cost) are what the tests check; the resource functions
only wire them into pulumi-aws.

Every group carries the cluster's version: a group without one stays on its old minor when the
control plane is upgraded, until kubelet falls outside the supported skew.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import pulumi
import pulumi_aws as aws

from vllm_platform import names
from vllm_platform.config.cluster import SystemNodes
from vllm_platform.contract import GPU_NODE_SELECTOR, GPU_POOL_LABEL, GPU_RESOURCE, GPU_TAINT, SYSTEM_NODE_SELECTOR
from vllm_platform.plan.plans import Plan, PoolPlan

GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
# The NVIDIA device plugin chart's default node affinity asks for this label (normally set by
# node-feature-discovery, which this platform does not run).
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
# cluster-autoscaler's AWS provider knows a node is a GPU node by this label, and then waits for
# the device plugin to advertise its GPUs instead of scaling up again in the meantime.
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
NODE_TEMPLATE_PREFIX = "k8s.io/cluster-autoscaler/node-template"
ROOT_DEVICE = "/dev/xvda"
# The vLLM image (~10 GB) and the checkpoint are read from the root volume at every cold start;
# gp3's baseline 125 MB/s would take ~20 min for a 70B checkpoint.
GPU_ROOT_THROUGHPUT_MBPS = 500
GPU_ROOT_IOPS = 6000
# 1: only the node itself and host-network pods (the VPC CNI) reach instance metadata; a pod, vLLM
# running a checkpoint's custom code included, cannot borrow the node role. The controllers get their
# own roles through Pod Identity, and the EBS CSI node plugin reads its zone from the Kubernetes API.
IMDS_HOP_LIMIT = 1
# kubelet's default hard eviction threshold (nodefs.available 10%) and the EKS AMI's kube-reserved
# ephemeral storage (1 GiB, and some filesystem overhead) come off the root volume.
NODEFS_EVICTION_FRACTION = 0.10
RESERVED_EPHEMERAL_GIB = 2
# The autoscaler owns the node count between minSize and maxSize; Pulumi must not reset it on every `up`.
AUTOSCALED_SIZE = ["scalingConfig.desiredSize"]

def gpu_node_group_name(pool: PoolPlan) -> str:
    return f"{names.GPU_NODE_GROUP_PREFIX}{pool.name}"


def node_group_name_prefix(name: str) -> str:
    """The provider appends a unique suffix: a replacement (new instance types, capacity type, subnets) is
    created before the old group goes, and two node groups of one cluster cannot share a name."""
    return names.name_prefix(names.NODE_GROUP, name)


def accelerator_name(pool: PoolPlan) -> str:
    return f"nvidia-{pool.instance.gpu.model.lower()}"


def gpu_node_labels(pool: PoolPlan) -> dict[str, str]:
    return {
        **GPU_NODE_SELECTOR,
        GPU_POOL_LABEL: pool.name,
        GPU_PRESENT_LABEL: "true",
        ACCELERATOR_LABEL: accelerator_name(pool),
    }


def allocatable_ephemeral_storage_gib(root_volume_gib: int) -> int:
    return math.floor(root_volume_gib * (1 - NODEFS_EVICTION_FRACTION)) - RESERVED_EPHEMERAL_GIB


def node_template_tags(pool: PoolPlan) -> dict[str, str]:
    """Auto Scaling group tags from which cluster-autoscaler builds a node of a pool scaled to zero.

    With no node to look at, these are all it knows: without the label it cannot match the
    models' nodeSelector, without the taint it would assume untolerating pods fit, and without the
    GPU and disk resources no pod requesting them would ever trigger a scale-up.
    """
    tags = {f"{NODE_TEMPLATE_PREFIX}/label/{key}": value for key, value in gpu_node_labels(pool).items()}
    tags[f"{NODE_TEMPLATE_PREFIX}/taint/{GPU_TAINT.key}"] = f"{GPU_TAINT.value}:{GPU_TAINT.effect}"
    tags[f"{NODE_TEMPLATE_PREFIX}/resources/{GPU_RESOURCE}"] = str(pool.gpus_per_node)
    storage = allocatable_ephemeral_storage_gib(pool.root_volume_gib)
    tags[f"{NODE_TEMPLATE_PREFIX}/resources/ephemeral-storage"] = f"{storage}Gi"
    return tags


def pool_summary(pool: PoolPlan) -> dict[str, Any]:
    """One entry of the `gpuPools` output; the cost is the dearest type of the pool at maxSize."""
    price = pool.dearest_usd_per_hour
    return {
        "instanceTypes": list(pool.instance_types),
        "gpuModel": pool.instance.gpu.model,
        "gpusPerNode": pool.gpus_per_node,
        "capacityType": pool.capacity_type,
        "minNodes": pool.min_size,
        "maxNodes": pool.max_size,
        "maxGpus": pool.gpus_per_node * pool.max_size,
        "maxHourlyCostUsd": round(price * pool.max_size, 2),
    }


def gpu_pools_summary(plan: Plan) -> dict[str, dict[str, Any]]:
    return {pool.name: pool_summary(pool) for pool in plan.pools}


def max_hourly_gpu_cost_usd(plan: Plan) -> float:
    return round(sum(summary["maxHourlyCostUsd"] for summary in gpu_pools_summary(plan).values()), 2)


def _launch_template(
    name: str,
    root_volume_gib: int,
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
    fast_root: bool = False,
    network_interfaces: Optional[list[aws.ec2.LaunchTemplateNetworkInterfaceArgs]] = None,
    placement_group: Optional[aws.ec2.PlacementGroup] = None,
) -> aws.ec2.LaunchTemplate:
    # No image_id and no instance profile: EKS supplies the AMI of ami_type, its bootstrap and the node role.
    return aws.ec2.LaunchTemplate(
        name,
        description=f"EKS managed node group {name}: IMDSv2 only, encrypted gp3 root",
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=IMDS_HOP_LIMIT
        ),
        block_device_mappings=[
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=ROOT_DEVICE,
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=root_volume_gib,
                    volume_type="gp3",
                    encrypted="true",
                    delete_on_termination="true",
                    iops=GPU_ROOT_IOPS if fast_root else None,
                    throughput=GPU_ROOT_THROUGHPUT_MBPS if fast_root else None,
                ),
            )
        ],
        network_interfaces=network_interfaces,
        placement=aws.ec2.LaunchTemplatePlacementArgs(group_name=placement_group.name) if placement_group else None,
        tag_specifications=[
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=tags) for kind in ("instance", "volume")
        ],
        update_default_version=True,
        tags=tags,
        opts=opts,
    )


def _launch_template_ref(template: aws.ec2.LaunchTemplate) -> aws.eks.NodeGroupLaunchTemplateArgs:
    return aws.eks.NodeGroupLaunchTemplateArgs(id=template.id, version=template.latest_version.apply(str))


def system_node_group(
    cluster_name: pulumi.Input[str],
    kubernetes_version: pulumi.Input[str],
    nodes: SystemNodes,
    node_role_arn: pulumi.Input[str],
    subnet_ids: Sequence[pulumi.Input[str]],
    tags: dict[str, str],
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource],
) -> aws.eks.NodeGroup:
    template = _launch_template("system", nodes.root_volume_gib, tags, pulumi.ResourceOptions(parent=parent))
    return aws.eks.NodeGroup(
        "system",
        cluster_name=cluster_name,
        version=kubernetes_version,
        node_group_name_prefix=node_group_name_prefix("system"),
        node_role_arn=node_role_arn,
        subnet_ids=list(subnet_ids),
        ami_type=SYSTEM_AMI_TYPE,
        capacity_type="ON_DEMAND",
        instance_types=[nodes.instance_type],
        scaling_config=aws.eks.NodeGroupScalingConfigArgs(
            desired_size=nodes.min_size, min_size=nodes.min_size, max_size=nodes.max_size
        ),
        labels=dict(SYSTEM_NODE_SELECTOR),
        launch_template=_launch_template_ref(template),
        update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on, ignore_changes=AUTOSCALED_SIZE),
    )


def gpu_node_group(
    cluster_name: pulumi.Input[str],
    kubernetes_version: pulumi.Input[str],
    pool: PoolPlan,
    node_role_arn: pulumi.Input[str],
    subnet_ids: Sequence[pulumi.Input[str]],
    cluster_security_group_id: pulumi.Input[str],
    tags: dict[str, str],
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource],
) -> aws.eks.NodeGroup:
    name = gpu_node_group_name(pool)
    child = pulumi.ResourceOptions(parent=parent)
    placement_group = None
    if pool.placement_group:
        # A cluster placement group packs nodes close together for NCCL across nodes; it lives in one zone.
        # No fixed name: Pulumi's generated one lets a replacement exist next to the group it replaces.
        placement_group = aws.ec2.PlacementGroup(name, strategy="cluster", tags=tags, opts=child)
        subnet_ids = list(subnet_ids)[:1]
    interfaces = None
    if efa_interfaces := pool.efa_interfaces:
        # EFA needs a security group that admits all traffic from itself: the EKS cluster security group does.
        interfaces = [
            aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                device_index=0 if card == 0 else 1,
                network_card_index=card,
                interface_type="efa",
                security_groups=[cluster_security_group_id],
                delete_on_termination="true",
            )
            for card in range(efa_interfaces)
        ]
    template = _launch_template(
        name, pool.root_volume_gib, tags, child, fast_root=True, network_interfaces=interfaces, placement_group=placement_group
    )
    group = aws.eks.NodeGroup(
        name,
        cluster_name=cluster_name,
        version=kubernetes_version,
        node_group_name_prefix=node_group_name_prefix(name),
        node_role_arn=node_role_arn,
        subnet_ids=list(subnet_ids),
        ami_type=GPU_AMI_TYPE,
        capacity_type=pool.capacity_type,
        instance_types=list(pool.instance_types),
        scaling_config=aws.eks.NodeGroupScalingConfigArgs(
            desired_size=pool.min_size, min_size=pool.min_size, max_size=pool.max_size
        ),
        labels=gpu_node_labels(pool),
        # The node group API spells the effect NO_SCHEDULE.
        taints=[aws.eks.NodeGroupTaintArgs(key=GPU_TAINT.key, value=GPU_TAINT.value, effect="NO_SCHEDULE")],
        launch_template=_launch_template_ref(template),
        update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
        tags={**tags, "gpu-pool": pool.name},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on, ignore_changes=AUTOSCALED_SIZE),
    )
    asg_name = group.resources.apply(lambda resources: resources[0].autoscaling_groups[0].name)
    for key, value in node_template_tags(pool).items():
        slug = key.removeprefix(f"{NODE_TEMPLATE_PREFIX}/").replace("/", "-")
        aws.autoscaling.Tag(
            f"{name}-{slug}",
            autoscaling_group_name=asg_name,
            # Read by the autoscaler from the group itself; instances need not carry them.
            tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
            opts=pulumi.ResourceOptions(parent=group),
        )
    return group
