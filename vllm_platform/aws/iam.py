"""IAM policy documents of the cluster layer, as plain dicts: testable without Pulumi or AWS."""

from __future__ import annotations

from typing import Any

POLICY_VERSION = "2012-10-17"
EKS_SERVICE = "eks.amazonaws.com"
EC2_SERVICE = "ec2.amazonaws.com"
POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
# Every role the program makes lives under this IAM path, and only there may the deploy role (iam/deploy-policy.json)
# create, tag, change or pass roles: a path is fixed at a role's creation, so no role the program did not make,
# the deploy role's own included, can be brought into it. EKS access entries, Pod Identity and Karpenter take such
# ARNs as they are.
ROLE_PATH = "/vllm-platform/"


def managed_policy_arn(partition: str, name: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{name}"


def service_trust_policy(service: str) -> dict[str, Any]:
    """Lets an AWS service assume the role; EKS Pod Identity also needs to tag the session."""
    actions = ["sts:AssumeRole", "sts:TagSession"] if service in (POD_IDENTITY_SERVICE, EKS_SERVICE) else ["sts:AssumeRole"]
    return {
        "Version": POLICY_VERSION,
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": actions}],
    }


def secrets_encryption_policy(key_arn: str) -> dict[str, Any]:
    """What the control plane needs of the KMS key to envelope-encrypt Secrets, and no other key."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"],
                "Resource": key_arn,
            }
        ],
    }


# What EC2 asks of the key to create, attach and later reattach an encrypted volume: AWS's own aws/ebs key
# policy, as Karpenter's troubleshooting page ("Node terminates before ready on failed encrypted EBS volume")
# gives it.
EBS_KEY_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"]


def platform_key_policy(partition: str, domain: str, account: str, region: str) -> dict[str, Any]:
    """The platform key's policy. The account statement is the default policy's: it lets IAM policies grant
    the key (the control plane's, Karpenter's and the model cache's roles have it that way) and keeps the key
    manageable. The second admits, only through EC2 in this region and only from this account, whoever
    launches a GPU node: EC2 launches Spot capacity as the AWSServiceRoleForEC2Spot service-linked role and
    fleets as AWSServiceRoleForEC2Fleet, which no IAM policy of ours can grant the key, and without it the
    instance terminates right after launch (Client.InternalError). No service uses the key as its own
    principal: the interruption queue is SQS-encrypted and the log group unencrypted."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "AccountAdministersTheKey",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "VolumesThroughEc2",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": EBS_KEY_ACTIONS,
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:CallerAccount": account, "kms:ViaService": f"ec2.{region}.{domain}"}},
            },
        ],
    }


def model_weights_policy(partition: str, bucket: str, prefix: str) -> dict[str, Any]:
    """Read one model's checkpoint: the objects under its prefix, and the listing of that prefix only."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ReadWeights",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": f"arn:{partition}:s3:::{bucket}/{prefix}*",
            },
            {
                "Sid": "ListWeights",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": f"arn:{partition}:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            },
        ],
    }


def sns_publish_policy(topic_arns: list[str]) -> dict[str, Any]:
    """Publish to the alert topics, and no other; the ARNs name their partition and region."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [{"Sid": "PublishAlerts", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": topic_arns}],
    }
