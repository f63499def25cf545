"""The AWS Load Balancer Controller's IAM policy, as a plain dict: the gateway's NLB is its work.

Statement for statement the controller's published reference, docs/install/iam_policy.json at the v3.5.0 tag
(the app version of chart 3.5.0), with its partition made this stack's, and one tightening the reference's
own notes invite: where it asks only that the `elbv2.k8s.aws/cluster` tag be present, this asks that it
name this cluster, the value the controller writes on every load balancer, target group and security group
it creates. So the role can change the load balancers of this cluster and no other.
"""

from __future__ import annotations

from typing import Any

from vllm_platform.aws.iam import POLICY_VERSION

CLUSTER_TAG = "elbv2.k8s.aws/cluster"

_DESCRIBE = (
    "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
    "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections", "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups", "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags",
    "ec2:GetCoipPoolUsage", "ec2:DescribeCoipPools", "ec2:GetSecurityGroupsForVpc", "ec2:DescribeIpamPools",
    "ec2:DescribeRouteTables", "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeLoadBalancerAttributes", "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeListenerCertificates", "elasticloadbalancing:DescribeSSLPolicies",
    "elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetGroupAttributes", "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeTags", "elasticloadbalancing:DescribeTrustStores",
    "elasticloadbalancing:DescribeListenerAttributes", "elasticloadbalancing:DescribeCapacityReservation",
)  # fmt: skip
_INTEGRATIONS = (
    "cognito-idp:DescribeUserPoolClient", "acm:ListCertificates", "acm:DescribeCertificate",
    "iam:ListServerCertificates", "iam:GetServerCertificate", "waf-regional:GetWebACL",
    "waf-regional:GetWebACLForResource", "waf-regional:AssociateWebACL", "waf-regional:DisassociateWebACL",
    "wafv2:GetWebACL", "wafv2:GetWebACLForResource", "wafv2:AssociateWebACL", "wafv2:DisassociateWebACL",
    "shield:GetSubscriptionState", "shield:DescribeProtection", "shield:CreateProtection", "shield:DeleteProtection",
)  # fmt: skip
_MODIFY_OWN = (
    "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
    "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets", "elasticloadbalancing:DeleteLoadBalancer",
    "elasticloadbalancing:ModifyTargetGroup", "elasticloadbalancing:ModifyTargetGroupAttributes",
    "elasticloadbalancing:DeleteTargetGroup", "elasticloadbalancing:ModifyListenerAttributes",
    "elasticloadbalancing:ModifyCapacityReservation", "elasticloadbalancing:ModifyIpPools",
)  # fmt: skip
_LISTENER_CHANGES = (
    "elasticloadbalancing:SetWebAcl", "elasticloadbalancing:ModifyListener",
    "elasticloadbalancing:AddListenerCertificates", "elasticloadbalancing:RemoveListenerCertificates",
    "elasticloadbalancing:ModifyRule", "elasticloadbalancing:SetRulePriorities",
)  # fmt: skip


def _allow(actions: Any, resource: Any = "*", condition: Any = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": list(actions), "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def controller_policy(partition: str, cluster_name: str) -> dict[str, Any]:
    """The reference's 16 statements, in its order."""
    ec2 = f"arn:{partition}:ec2:*:*:security-group/*"
    elb = f"arn:{partition}:elasticloadbalancing:*:*"
    balancers = [f"{elb}:targetgroup/*/*", f"{elb}:loadbalancer/net/*/*", f"{elb}:loadbalancer/app/*/*"]
    listeners = [f"{elb}:listener/net/*/*/*", f"{elb}:listener/app/*/*/*", f"{elb}:listener-rule/net/*/*/*", f"{elb}:listener-rule/app/*/*/*"]
    tagged_on_create = {"StringEquals": {f"aws:RequestTag/{CLUSTER_TAG}": cluster_name}}
    owned = {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster_name}}
    # Other tags may change on what this cluster owns, the ownership tag itself never.
    owned_keep_tag = {**owned, "Null": {f"aws:RequestTag/{CLUSTER_TAG}": "true"}}
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            _allow(["iam:CreateServiceLinkedRole"], condition={"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}),
            _allow(_DESCRIBE),
            _allow(_INTEGRATIONS),
            _allow(["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]),
            _allow(["ec2:CreateSecurityGroup"]),
            _allow(["ec2:CreateTags"], ec2, {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup", **tagged_on_create["StringEquals"]}}),
            _allow(["ec2:CreateTags", "ec2:DeleteTags"], ec2, owned_keep_tag),
            _allow(["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"], condition=owned),
            _allow(["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"], condition=tagged_on_create),
            _allow(["elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener", "elasticloadbalancing:CreateRule", "elasticloadbalancing:DeleteRule"]),
            _allow(["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"], balancers, owned_keep_tag),
            _allow(["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"], listeners),
            _allow(_MODIFY_OWN, condition=owned),
            _allow(
                ["elasticloadbalancing:AddTags"],
                balancers,
                {"StringEquals": {"elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"], **tagged_on_create["StringEquals"]}},
            ),
            _allow(["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"], f"{elb}:targetgroup/*/*"),
            _allow(_LISTENER_CHANGES),
        ],
    }
