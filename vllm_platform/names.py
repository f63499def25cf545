"""The one rule for every name the program gives AWS: each resource type's limit, and how a name is kept
within it.

Pulumi names an AWS resource after its logical name: `<logical>-<7 hex>` when it auto-names (pulumi-aws's
`AutoName`, 8 characters added), or `<prefix><26 digits>` when the program gives a `*_name_prefix`
(Terraform's `PrefixedUniqueId`). Pulumi checks only its own, sometimes looser, maximum; AWS refuses the
rest at create time, after the preview passed. So every generated name goes through `logical_name` or
`name_prefix` here, which shorten a base that would not fit to its head plus a hash of all of it: still
unique, still readable, and unchanged for every name that fits.

Limits as AWS's API models give them (botocore 1.44.8 service models; the EKS node group's from the EKS
User Guide, which the model leaves out), read 2026-12-02.
"""

from __future__ import annotations

import hashlib

from vllm_platform.contract import LABEL_MAX_LENGTH

# Auto-naming adds "-" and 7 hex characters; a name prefix gets 26 digits.
AUTO_NAME_SUFFIX = 8
PREFIX_SUFFIX = 26
HASH_LENGTH = 8

IAM_ROLE = "aws:iam/role:Role"
IAM_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
# A GPU pool's NodePool, EC2NodeClass and placement group are named `gpu-<pool>`.
GPU_POOL_PREFIX = "gpu-"

# Pulumi resource type -> the longest name AWS accepts for it.
AWS_NAME_LIMITS = {
    "aws:iam/role:Role": 64,
    "aws:iam/rolePolicy:RolePolicy": 128,
    "aws:iam/policy:Policy": 128,
    "aws:iam/instanceProfile:InstanceProfile": 128,
    "aws:eks/cluster:Cluster": 100,
    "aws:eks/nodeGroup:NodeGroup": 63,
    "aws:ec2/launchTemplate:LaunchTemplate": 128,
    "aws:ec2/placementGroup:PlacementGroup": 255,
    "aws:ec2/securityGroup:SecurityGroup": 255,
    "aws:cloudwatch/logGroup:LogGroup": 512,
    "aws:cloudwatch/eventRule:EventRule": 64,
    "aws:cloudwatch/eventTarget:EventTarget": 64,
    "aws:sqs/queue:Queue": 80,
    "aws:s3/bucket:Bucket": 63,
    "aws:kms/alias:Alias": 256,
    "aws:ecr/repository:Repository": 256,
    # A pull-through cache rule's ecrRepositoryPrefix.
    "aws:ecr/pullThroughCacheRule:PullThroughCacheRule": 30,
    "aws:secretsmanager/secret:Secret": 512,
}


def shortened(base: str, room: int) -> str:
    """`base`, or where it is longer than `room`, its head and a hash of all of it."""
    if len(base) <= room:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:HASH_LENGTH]
    return f"{base[: room - HASH_LENGTH - 1].rstrip('-_.')}-{digest}"


def logical_name(resource_type: str, base: str) -> str:
    """The logical name for an auto-named resource of this type: `base`, or, where `base` plus Pulumi's
    suffix would pass the type's AWS limit, its head and a hash."""
    return shortened(base, AWS_NAME_LIMITS[resource_type] - AUTO_NAME_SUFFIX)


def name_prefix(resource_type: str, base: str) -> str:
    """A `*_name_prefix` ending in "-", short enough for the 26 digits the provider appends."""
    return shortened(base, AWS_NAME_LIMITS[resource_type] - PREFIX_SUFFIX - 1) + "-"


def kubernetes_name(base: str) -> str:
    """`base`, or where it is longer than a label value may be, its head and a hash: a Kubernetes object's name
    that becomes a label value too (a Job's `job-name`)."""
    return shortened(base, LABEL_MAX_LENGTH)


def fits(resource_type: str, name: str) -> bool:
    return len(name) <= AWS_NAME_LIMITS[resource_type]
