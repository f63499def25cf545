"""GPU capacity on Karpenter: its controller (Helm, Pod Identity role), its node role, the interruption queue
and its EventBridge rules, the discovery tags, and one EC2NodeClass and NodePool per GPU pool.

Wiring only: the policy documents come from `aws.karpenter`, the manifests and values from `k8s.karpenter`.
Karpenter runs on the system node group, which must exist first; nothing of the rest of the stack waits on
a GPU node, only on the NodePools that can launch one.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from vllm_platform import names
from vllm_platform.aws import karpenter as policies
from vllm_platform.aws.addons import pod_identity_role, service_role
from vllm_platform.aws.eks import KARPENTER_NODE_POLICIES
from vllm_platform.aws.iam import EC2_SERVICE
from vllm_platform.aws.network import NetworkFacts
from vllm_platform.components.helm import helm_release
from vllm_platform.components.model import custom_resource
from vllm_platform.contract import KARPENTER_DISCOVERY_TAG, KARPENTER_SERVICE_ACCOUNT, KUBE_SYSTEM
from vllm_platform.k8s import karpenter
from vllm_platform.pins import KARPENTER, KARPENTER_CRD
from vllm_platform.plan.plans import Plan

QUEUE = "aws:sqs/queue:Queue"
EVENT_RULE = "aws:cloudwatch/eventRule:EventRule"
PLACEMENT_GROUP = "aws:ec2/placementGroup:PlacementGroup"
QUEUE_TARGET_ID = "karpenter-interruption-queue"


class AwsContext:
    """What the capacity layer needs to know of the account and the cluster."""

    def __init__(self, partition: str, domain: str, region: str, account: str, cluster: aws.eks.Cluster, key: aws.kms.Key):
        self.partition, self.domain, self.region, self.account = partition, domain, region, account
        self.cluster, self.key = cluster, key


class GpuCapacity(pulumi.ComponentResource):
    """Contract: `ready` is what must exist before a model's pods can get a GPU node (the controller, its
    permissions, the NodePools); `node_role` the role the GPU nodes run as; `controller_role` Karpenter's."""

    ready: list[pulumi.Resource]
    node_role: aws.iam.Role
    controller_role: aws.iam.Role

    def __init__(
        self,
        name: str,
        plan: Plan,
        context: AwsContext,
        network: NetworkFacts,
        provider: k8s.Provider,
        tags: dict[str, str],
        after: list[pulumi.Resource],
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        super().__init__("vllm-platform:index:GpuCapacity", name, None, opts)
        cluster_name = str(plan.config.cluster.name)
        child = pulumi.ResourceOptions(parent=self)
        self.node_role, node_policies = service_role(
            "karpenter-node", EC2_SERVICE, KARPENTER_NODE_POLICIES, context.partition, tags, self
        )
        # Karpenter's nodes are no managed node group: EKS admits their role only through this entry.
        node_access = aws.eks.AccessEntry(
            "karpenter-node", cluster_name=context.cluster.name, principal_arn=self.node_role.arn, type="EC2_LINUX",
            tags=tags, opts=child,
        )  # fmt: skip
        queue, queue_wiring = self._interruption_queue(tags)
        self.controller_role, identity = pod_identity_role(
            "karpenter", context.cluster.name, KUBE_SYSTEM, KARPENTER_SERVICE_ACCOUNT, tags, self
        )
        documents = pulumi.Output.all(self.node_role.arn, queue.arn, context.key.arn).apply(
            lambda arns: policies.controller_policies(
                context.partition, context.domain, context.region, context.account, cluster_name, arns[0], arns[1], arns[2]
            )
        )
        grants = [
            aws.iam.RolePolicy(
                names.logical_name(names.IAM_ROLE_POLICY, f"karpenter-{document}"),
                role=self.controller_role.id,
                policy=documents.apply(lambda all_documents, document=document: json.dumps(all_documents[document])),
                opts=child,
            )
            for document in policies.CONTROLLER_POLICY_NAMES
        ]
        discovery = self._discovery_tags(cluster_name, context.cluster, network)

        on_cluster = pulumi.ResourceOptions(parent=self, provider=provider)
        crds = helm_release(KARPENTER_CRD, {}, pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=after)))
        controller = helm_release(
            KARPENTER,
            karpenter.karpenter_values(cluster_name, context.region, queue.name),
            pulumi.ResourceOptions.merge(
                on_cluster,
                pulumi.ResourceOptions(depends_on=[*after, crds, identity, *grants, *queue_wiring, node_access]),
            ),
            skip_crds=True,
        )
        pools = []
        for pool in plan.pools:
            placement = None
            if pool.placement_group:
                # A cluster placement group packs nodes close together for NCCL across nodes; it lives in one zone.
                # No fixed name: Pulumi's generated one lets a replacement exist next to the group it replaces.
                placement = aws.ec2.PlacementGroup(
                    names.logical_name(PLACEMENT_GROUP, karpenter.pool_resource_name(pool)), strategy="cluster", tags=tags, opts=child
                )
            node_class = custom_resource(
                f"{karpenter.pool_resource_name(pool)}-class",
                karpenter.node_class(
                    pool, cluster_name, plan.config.cluster.gpu_ami_alias, self.node_role.name, context.key.arn, tags,
                    placement.name if placement else None,
                ),
                # After the controller, so destroyed before it: the class's finalizer needs the running controller
                # to remove its instance profile and launch templates, or the destroy hangs on it.
                pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[crds, controller, *discovery])),
            )  # fmt: skip
            pools.append(
                custom_resource(
                    karpenter.pool_resource_name(pool),
                    karpenter.node_pool(pool, network.gpu_pool_zones[pool.name]),
                    pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[crds, controller, node_class])),
                )
            )
        self.ready = [controller, *pools, node_access, *node_policies]
        self.register_outputs({})

    def _interruption_queue(self, tags: dict[str, str]) -> tuple[aws.sqs.Queue, list[pulumi.Resource]]:
        """The queue Karpenter reads interruption and rebalance notices from, and the rules that fill it."""
        child = pulumi.ResourceOptions(parent=self)
        queue = aws.sqs.Queue(
            names.logical_name(QUEUE, "karpenter-interruption"),
            message_retention_seconds=policies.QUEUE_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        wiring: list[pulumi.Resource] = []
        rules = []
        for rule_name, source, detail_type in policies.INTERRUPTION_EVENTS:
            rule = aws.cloudwatch.EventRule(
                names.logical_name(EVENT_RULE, f"karpenter-{rule_name}"),
                description=f"{detail_type} for Karpenter",
                event_pattern=json.dumps(policies.event_pattern(source, detail_type)),
                tags=tags,
                opts=child,
            )
            rules.append(rule)
            wiring.append(
                aws.cloudwatch.EventTarget(
                    f"karpenter-{rule_name}", rule=rule.name, arn=queue.arn, target_id=QUEUE_TARGET_ID, opts=child
                )
            )
        wiring.append(
            aws.sqs.QueuePolicy(
                "karpenter-interruption",
                queue_url=queue.url,
                policy=pulumi.Output.all(queue.arn, *(r.arn for r in rules)).apply(
                    lambda arns: json.dumps(policies.queue_policy(arns[0], list(arns[1:])))
                ),
                opts=child,
            )
        )
        return queue, wiring

    def _discovery_tags(self, cluster_name: str, cluster: aws.eks.Cluster, network: NetworkFacts) -> list[aws.ec2.Tag]:
        """Karpenter finds its subnets and security group by tag: the cluster security group always, and an
        existing VPC's private subnets, which a VPC this program makes carries already."""
        child = pulumi.ResourceOptions(parent=self)
        targets: list[tuple[str, Any]] = [("cluster-security-group", cluster.vpc_config.cluster_security_group_id)]
        if not network.discovery_tagged:
            targets += [(f"subnet-{index}", subnet) for index, subnet in enumerate(network.private_subnet_ids)]
        return [
            aws.ec2.Tag(
                f"karpenter-discovery-{what}", resource_id=resource, key=KARPENTER_DISCOVERY_TAG, value=cluster_name, opts=child
            )
            for what, resource in targets
        ]
