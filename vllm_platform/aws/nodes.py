"""The system node group: an EKS managed node group for the add-ons, Prometheus, KEDA and Karpenter; and the
GPU pools' summaries (`gpuPools`, the cost outputs). Karpenter launches the GPU nodes (components/capacity.py).

System nodes carry `node-type: system` and no taint. The group carries the cluster's version: a group
without one stays on its old minor when the control plane is upgraded, until kubelet falls outside the
supported skew. Nothing scales it: it holds `minSize` nodes, and a larger `minSize` adds some.
"""

from __future__ import annotations

from typing import Any, Sequence

import pulumi
import pulumi_aws as aws

from vllm_platform import names
from vllm_platform.config.cluster import SystemNodes
from vllm_platform.contract import IMDS_HOP_LIMIT, ROOT_DEVICE, SYSTEM_NODE_SELECTOR
from vllm_platform.plan.plans import Plan, PoolPlan

SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"


def node_group_name_prefix(name: str) -> str:
    """The provider appends a unique suffix: a replacement (new instance type, subnets) is created before
    the old group goes, and two node groups of one cluster cannot share a name."""
    return names.name_prefix(names.NODE_GROUP, name)


def pool_summary(pool: PoolPlan) -> dict[str, Any]:
    """One entry of the `gpuPools` output; the cost is the dearest type of the pool at maxSize."""
    price = pool.dearest_usd_per_hour
    return {
        "instanceTypes": list(pool.instance_types),
        "gpuModel": pool.instance.gpu.model,
        "gpusPerNode": pool.gpus_per_node,
        # The first Karpenter prefers, in the words this output had for a node group's (ON_DEMAND, SPOT), and
        # RESERVED; then all of them in Karpenter's words, and the reservations they may use.
        "capacityType": pool.capacity_types[0].output_name,
        "capacityTypes": [kind.value for kind in pool.capacity_types],
        "capacityReservations": [term.get("id") or term.get("tags") for term in pool.capacity_reservations],
        # Karpenter keeps no idle node (the models' replicas.min hold nodes); a node group keeps its minimum.
        "minNodes": pool.min_size,
        "maxNodes": pool.max_size,
        "maxGpus": pool.gpus_per_node * pool.max_size,
        "maxHourlyCostUsd": round(price * pool.max_size, 2),
        # What runs with every model at rest: the nodes replicas.min holds, and the warm nodes on top.
        "warmNodes": pool.warm_nodes,
        # A node group's minimum holds nodes whatever runs on them, the warm placeholders included.
        "idleNodes": max(pool.nodes_at_min + pool.warm_nodes, pool.min_size),
        "idleHourlyCostUsd": round(price * max(pool.nodes_at_min + pool.warm_nodes, pool.min_size), 2),
    }


def gpu_pools_summary(plan: Plan) -> dict[str, dict[str, Any]]:
    return {pool.name: pool_summary(pool) for pool in plan.pools}


def hourly_gpu_cost_usd(plan: Plan, which: str) -> float:
    """The sum over pools of `maxHourlyCostUsd` or `idleHourlyCostUsd`."""
    return round(sum(summary[which] for summary in gpu_pools_summary(plan).values()), 2)


def _launch_template(name: str, root_volume_gib: int, tags: dict[str, str], opts: pulumi.ResourceOptions) -> aws.ec2.LaunchTemplate:
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
                    volume_size=root_volume_gib, volume_type="gp3", encrypted="true", delete_on_termination="true"
                ),
            )
        ],
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
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )
