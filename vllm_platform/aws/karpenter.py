"""What AWS needs for Karpenter, as plain dicts: the controller's IAM policies, the interruption queue's policy
and the EventBridge rules that feed it.

The controller policies are Karpenter v1.14.1's reference (the getting-started CloudFormation template,
website/content/en/docs/getting-started/getting-started-with-karpenter/cloudformation.yaml at the v1.14.1
tag, which the site publishes as its v1.14 page), statement for statement, with the template's substitutions made: scoped to this cluster by
the tags Karpenter puts on what it launches (`kubernetes.io/cluster/<cluster>: owned`,
`eks:eks-cluster-name`, `karpenter.sh/nodepool`, `karpenter.k8s.aws/ec2nodeclass`) and by ARN (the node
role, the cluster, the queue) wherever the reference scopes them. One statement is the platform's own:
the GPU nodes' root volumes are encrypted with the platform's KMS key, which the reference leaves out.
"""

from __future__ import annotations

from typing import Any

from vllm_platform.aws.iam import POLICY_VERSION

# Karpenter's reference queue keeps a message five minutes: an interruption is news for two at most.
QUEUE_RETENTION_SECONDS = 300
# (rule name, event source, detail type): the reference's five rules.
INTERRUPTION_EVENTS = (
    ("scheduled-change", "aws.health", "AWS Health Event"),
    ("spot-interruption", "aws.ec2", "EC2 Spot Instance Interruption Warning"),
    ("rebalance", "aws.ec2", "EC2 Instance Rebalance Recommendation"),
    ("instance-state-change", "aws.ec2", "EC2 Instance State-change Notification"),
    ("capacity-reservation-interruption", "aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
)


# The controller's inline policies, in the order controller_policies gives them.
CONTROLLER_POLICY_NAMES = (
    "node-lifecycle", "iam-integration", "eks-integration", "interruption", "zonal-shift", "resource-discovery",
    "volume-key",
)  # fmt: skip


def event_pattern(source: str, detail_type: str) -> dict[str, Any]:
    return {"source": [source], "detail-type": [detail_type]}


def queue_policy(queue_arn: str, rule_arns: list[str]) -> dict[str, Any]:
    """Only EventBridge, and only for this cluster's rules, may send; nothing reaches the queue without TLS.

    The Allow admits EventBridge; the Deny keeps out every other sender, an identity of the account whose own IAM
    policy allows sqs:SendMessage included, which could otherwise make Karpenter drain nodes with a forged event.
    A request of an IAM identity carries no aws:SourceArn, and a negated operator on a key the request lacks holds."""
    return {
        "Version": POLICY_VERSION,
        "Id": "EC2InterruptionPolicy",
        "Statement": [
            {
                "Sid": "EventBridgeRulesOnly",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}},
            },
            {
                "Sid": "DenyOtherSenders",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnNotEquals": {"aws:SourceArn": rule_arns}},
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


def _allow(sid: str, actions: list[str], resources: Any, condition: Any = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, "Statement": list(statements)}


def controller_policies(
    partition: str, domain: str, region: str, account: str, cluster: str, node_role_arn: str, queue_arn: str, key_arn: str
) -> dict[str, dict[str, Any]]:
    """The controller's policies by name: the reference's six, then the volume key's. `domain`: the partition's
    DNS suffix, for the key's use through EC2 only."""
    ec2 = f"arn:{partition}:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned"}
    requested = {f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned", "aws:RequestTag/eks:eks-cluster-name": cluster}
    nodepool = {"aws:ResourceTag/karpenter.sh/nodepool": "*"}
    requested_nodepool = {"aws:RequestTag/karpenter.sh/nodepool": "*"}
    launched = [f"{ec2}:*:{kind}/*" for kind in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")]
    profiles = f"arn:{partition}:iam::{account}:instance-profile/*"
    region_tag = {"aws:ResourceTag/topology.kubernetes.io/region": region}
    cluster_arn = f"arn:{partition}:eks:{region}:{account}:cluster/{cluster}"
    return {
        "node-lifecycle": _document(
            _allow(
                "AllowScopedEC2InstanceAccessActions",
                ["ec2:RunInstances", "ec2:CreateFleet"],
                [f"{ec2}::image/*", f"{ec2}::snapshot/*", f"{ec2}:*:security-group/*", f"{ec2}:*:subnet/*",
                 f"{ec2}:*:capacity-reservation/*", f"{ec2}:*:placement-group/*"],
            ),  # fmt: skip
            _allow(
                "AllowScopedEC2LaunchTemplateAccessActions",
                ["ec2:RunInstances", "ec2:CreateFleet"],
                f"{ec2}:*:launch-template/*",
                {"StringEquals": owned, "StringLike": nodepool},
            ),
            _allow(
                "AllowScopedEC2InstanceActionsWithTags",
                ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                launched,
                {"StringEquals": requested, "StringLike": requested_nodepool},
            ),
            _allow(
                "AllowScopedResourceCreationTagging",
                ["ec2:CreateTags"],
                launched,
                {
                    "StringEquals": {**requested, "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                    "StringLike": requested_nodepool,
                },
            ),
            _allow(
                "AllowScopedResourceTagging",
                ["ec2:CreateTags"],
                f"{ec2}:*:instance/*",
                {
                    "StringEquals": owned,
                    "StringLike": nodepool,
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                    "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]},
                },
            ),
            _allow(
                "AllowScopedDeletion",
                ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
                {"StringEquals": owned, "StringLike": nodepool},
            ),
        ),
        "iam-integration": _document(
            _allow(
                "AllowPassingInstanceRole",
                ["iam:PassRole"],
                node_role_arn,
                {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
            ),
            _allow(
                "AllowScopedInstanceProfileCreationActions",
                ["iam:CreateInstanceProfile"],
                profiles,
                {
                    "StringEquals": {**requested, "aws:RequestTag/topology.kubernetes.io/region": region},
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            ),
            _allow(
                "AllowScopedInstanceProfileTagActions",
                ["iam:TagInstanceProfile"],
                profiles,
                {
                    "StringEquals": {**owned, **region_tag, **requested, "aws:RequestTag/topology.kubernetes.io/region": region},
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            ),
            _allow(
                "AllowScopedInstanceProfileActions",
                ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
                profiles,
                {"StringEquals": {**owned, **region_tag}, "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"}},
            ),
        ),
        "eks-integration": _document(_allow("AllowAPIServerEndpointDiscovery", ["eks:DescribeCluster"], cluster_arn)),
        "interruption": _document(
            _allow("AllowInterruptionQueueActions", ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"], queue_arn)
        ),
        "zonal-shift": _document(
            _allow(
                "AllowZonalShiftStatusReadOnly",
                ["arc-zonal-shift:GetManagedResource"],
                "*",
                {"StringEquals": {"arc-zonal-shift:ResourceIdentifier": cluster_arn}},
            )
        ),
        "resource-discovery": _document(
            _allow(
                "AllowRegionalReadActions",
                ["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
                 "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates",
                 "ec2:DescribePlacementGroups", "ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"],
                "*",
                {"StringEquals": {"aws:RequestedRegion": region}},
            ),  # fmt: skip
            _allow("AllowSSMReadActions", ["ssm:GetParameter"], f"arn:{partition}:ssm:{region}::parameter/aws/service/*"),
            _allow("AllowPricingReadActions", ["pricing:GetProducts"], "*"),
            _allow("AllowUnscopedInstanceProfileListAction", ["iam:ListInstanceProfiles"], "*"),
            _allow("AllowInstanceProfileReadActions", ["iam:GetInstanceProfile"], profiles),
        ),
        # Not in the reference: EC2 creates the encrypted root volumes of an instance launch with the caller's
        # permissions on the key, and grants itself its use for the volume's lifetime. Only through EC2 in this
        # region: the same key encrypts the cluster's Secrets and the model cache, which the controller never reads.
        "volume-key": _document(
            _allow(
                "EncryptNodeVolumes",
                ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
                key_arn,
                {"StringEquals": {"kms:ViaService": f"ec2.{region}.{domain}"}},
            ),
            _allow(
                "GrantVolumesTheKey",
                ["kms:CreateGrant"],
                key_arn,
                {"Bool": {"kms:GrantIsForAWSResource": "true"}, "StringEquals": {"kms:ViaService": f"ec2.{region}.{domain}"}},
            ),
        ),
    }
