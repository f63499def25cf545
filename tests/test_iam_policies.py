"""The IAM policies of the roles that run the program (iam/): what `pulumi preview` and `pulumi up` ask AWS,
checked against the provider functions the program invokes and the resources it manages, both ways.

Actions per provider function and resource type are those terraform-provider-aws calls (pulumi-aws v7
bridges it), as the research for this project read them (2026-12-02): a data source's Describe* call, and
a resource's create, read, update, tag and delete calls. `pulumi preview` runs the program (its provider
functions) and diffs against state without refresh, so it reads no resource.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from functools import lru_cache
from typing import Any

import pytest

from tests.conftest import COMMITTED_STACKS, render_document, rendered_stack
from tests.test_aws_names import longest_document
from tools import render
from vllm_platform.aws import delivery as documents
from vllm_platform.aws.iam import ROLE_PATH

IAM_DIR = render.PROJECT_ROOT / "iam"
PREVIEW_POLICY = IAM_DIR / "preview-policy.json"
DEPLOY_POLICY = IAM_DIR / "deploy-policy.json"
# IAM's limit on a managed policy, in characters without whitespace.
MANAGED_POLICY_MAX_CHARS = 6144

# Provider function -> the actions its data source calls. STS GetCallerIdentity needs no permission ("No
# permissions are required to perform this operation", STS API reference); partition and region are
# answered from the provider's own endpoint tables.
INVOKE_ACTIONS = {
    "aws:index/getCallerIdentity:getCallerIdentity": set(),
    "aws:index/getPartition:getPartition": set(),
    "aws:index/getRegion:getRegion": set(),
    # Only for an assumed-role ARN, whose role it looks up: the caller's own.
    "aws:iam/getSessionContext:getSessionContext": {"iam:GetRole"},
    "aws:index/getAvailabilityZones:getAvailabilityZones": {"ec2:DescribeAvailabilityZones"},
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": {"ec2:DescribeInstanceTypeOfferings"},
    "aws:ec2/getSubnet:getSubnet": {"ec2:DescribeSubnets"},
    "aws:eks/getAddonVersion:getAddonVersion": {"eks:DescribeAddonVersions"},
}
EC2_TAGS = {"ec2:CreateTags", "ec2:DeleteTags", "ec2:DescribeTags"}
# Resource type -> what managing it calls.
RESOURCE_ACTIONS: dict[str, set[str]] = {
    "aws:ec2/vpc:Vpc": {"ec2:CreateVpc", "ec2:DeleteVpc", "ec2:DescribeVpcs", "ec2:DescribeVpcAttribute", "ec2:ModifyVpcAttribute",
                        "ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups", *EC2_TAGS},
    "aws:ec2/subnet:Subnet": {"ec2:CreateSubnet", "ec2:DeleteSubnet", "ec2:DescribeSubnets", "ec2:ModifySubnetAttribute", *EC2_TAGS},
    "aws:ec2/internetGateway:InternetGateway": {"ec2:CreateInternetGateway", "ec2:DeleteInternetGateway", "ec2:AttachInternetGateway",
                                                "ec2:DetachInternetGateway", "ec2:DescribeInternetGateways", *EC2_TAGS},
    "aws:ec2/routeTable:RouteTable": {"ec2:CreateRouteTable", "ec2:DeleteRouteTable", "ec2:DescribeRouteTables", *EC2_TAGS},
    "aws:ec2/route:Route": {"ec2:CreateRoute", "ec2:DeleteRoute", "ec2:ReplaceRoute", "ec2:DescribeRouteTables"},
    "aws:ec2/routeTableAssociation:RouteTableAssociation": {"ec2:AssociateRouteTable", "ec2:DisassociateRouteTable",
                                                            "ec2:ReplaceRouteTableAssociation", "ec2:DescribeRouteTables"},
    "aws:ec2/eip:Eip": {"ec2:AllocateAddress", "ec2:ReleaseAddress", "ec2:DescribeAddresses", "ec2:DescribeAddressesAttribute",
                        "ec2:DisassociateAddress", *EC2_TAGS},
    "aws:ec2/natGateway:NatGateway": {"ec2:CreateNatGateway", "ec2:DeleteNatGateway", "ec2:DescribeNatGateways", *EC2_TAGS},
    "aws:ec2/vpcEndpoint:VpcEndpoint": {"ec2:CreateVpcEndpoint", "ec2:DeleteVpcEndpoints", "ec2:DescribeVpcEndpoints",
                                        "ec2:ModifyVpcEndpoint", "ec2:DescribePrefixLists", *EC2_TAGS},
    "aws:ec2/launchTemplate:LaunchTemplate": {"ec2:CreateLaunchTemplate", "ec2:CreateLaunchTemplateVersion", "ec2:DeleteLaunchTemplate",
                                              "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions",
                                              "ec2:ModifyLaunchTemplate", *EC2_TAGS},
    "aws:ec2/placementGroup:PlacementGroup": {"ec2:CreatePlacementGroup", "ec2:DeletePlacementGroup", "ec2:DescribePlacementGroups", *EC2_TAGS},
    # A discovery tag on what the program does not create (the cluster security group, an existing VPC's subnets).
    "aws:ec2/tag:Tag": EC2_TAGS,
    "aws:sqs/queue:Queue": {"sqs:CreateQueue", "sqs:DeleteQueue", "sqs:GetQueueAttributes", "sqs:SetQueueAttributes",
                            "sqs:GetQueueUrl", "sqs:TagQueue", "sqs:UntagQueue", "sqs:ListQueueTags"},
    "aws:sqs/queuePolicy:QueuePolicy": {"sqs:SetQueueAttributes", "sqs:GetQueueAttributes"},
    "aws:cloudwatch/eventRule:EventRule": {"events:PutRule", "events:DeleteRule", "events:DescribeRule", "events:TagResource",
                                           "events:UntagResource", "events:ListTagsForResource"},
    "aws:cloudwatch/eventTarget:EventTarget": {"events:PutTargets", "events:RemoveTargets", "events:ListTargetsByRule"},
    "aws:eks/cluster:Cluster": {"eks:CreateCluster", "eks:DeleteCluster", "eks:DescribeCluster", "eks:UpdateClusterConfig",
                                "eks:UpdateClusterVersion", "eks:DescribeUpdate", "eks:TagResource", "eks:UntagResource",
                                "eks:ListTagsForResource", "iam:PassRole", "iam:CreateServiceLinkedRole", "kms:DescribeKey",
                                "kms:CreateGrant"},
    # A node group from the program's own launch template: EKS refuses CreateNodegroup ("You are not authorized
    # to launch instances with this launch template") unless the caller may launch from it, tags included.
    "aws:eks/nodeGroup:NodeGroup": {"eks:CreateNodegroup", "eks:DeleteNodegroup", "eks:DescribeNodegroup",
                                    "eks:UpdateNodegroupConfig", "eks:UpdateNodegroupVersion", "eks:DescribeUpdate",
                                    "eks:TagResource", "eks:UntagResource", "iam:PassRole", "iam:CreateServiceLinkedRole",
                                    "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeSubnets", "ec2:RunInstances",
                                    "ec2:CreateTags"},
    "aws:eks/addon:Addon": {"eks:CreateAddon", "eks:DeleteAddon", "eks:DescribeAddon", "eks:UpdateAddon",
                            "eks:DescribeAddonConfiguration", "eks:DescribeAddonVersions", "eks:DescribeUpdate",
                            "eks:TagResource", "eks:UntagResource"},
    "aws:eks/accessEntry:AccessEntry": {"eks:CreateAccessEntry", "eks:DeleteAccessEntry", "eks:DescribeAccessEntry",
                                        "eks:UpdateAccessEntry", "eks:TagResource", "eks:UntagResource"},
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": {"eks:AssociateAccessPolicy", "eks:DisassociateAccessPolicy",
                                                                "eks:ListAssociatedAccessPolicies"},
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": {"eks:CreatePodIdentityAssociation", "eks:DeletePodIdentityAssociation",
                                                              "eks:DescribePodIdentityAssociation", "eks:UpdatePodIdentityAssociation",
                                                              "eks:TagResource", "eks:UntagResource", "iam:PassRole"},
    "aws:iam/role:Role": {"iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:UpdateRole", "iam:UpdateRoleDescription",
                          "iam:UpdateAssumeRolePolicy", "iam:TagRole", "iam:UntagRole", "iam:ListRolePolicies",
                          "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole"},
    "aws:iam/rolePolicy:RolePolicy": {"iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy"},
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": {"iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:ListAttachedRolePolicies"},
    "aws:kms/key:Key": {"kms:CreateKey", "kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:GetKeyRotationStatus",
                        "kms:EnableKeyRotation", "kms:ListResourceTags", "kms:TagResource", "kms:UntagResource",
                        "kms:ScheduleKeyDeletion"},
    "aws:cloudwatch/logGroup:LogGroup": {"logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:DescribeLogGroups",
                                         "logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy", "logs:TagResource",
                                         "logs:UntagResource", "logs:ListTagsForResource"},
    # The model cache. aws_s3_bucket's read asks every bucket setting, and fails on any it may not read;
    # terraform-provider-aws 6.23 (pulumi-aws 7.13) tags through S3 Control's APIs, earlier ones through the
    # bucket's own: the floor and the newest both run.
    "aws:s3/bucket:Bucket": {"s3:CreateBucket", "s3:DeleteBucket", "s3:ListBucket", "s3:GetBucketPolicy", "s3:GetBucketAcl",
                             "s3:GetBucketCORS", "s3:GetBucketWebsite", "s3:GetBucketVersioning", "s3:GetAccelerateConfiguration",
                             "s3:GetBucketRequestPayment", "s3:GetBucketLogging", "s3:GetLifecycleConfiguration",
                             "s3:GetReplicationConfiguration", "s3:GetEncryptionConfiguration", "s3:GetBucketObjectLockConfiguration",
                             "s3:TagResource", "s3:UntagResource", "s3:ListTagsForResource", "s3:GetBucketTagging", "s3:PutBucketTagging"},
    # Each delete is its Put's permission (DeleteBucketOwnershipControls, DeletePublicAccessBlock, DeleteBucketEncryption,
    # DeleteBucketLifecycle), except the policy's.
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": {"s3:PutBucketOwnershipControls", "s3:GetBucketOwnershipControls"},
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": {"s3:PutBucketPublicAccessBlock", "s3:GetBucketPublicAccessBlock"},
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": {"s3:PutEncryptionConfiguration",
                                                                                              "s3:GetEncryptionConfiguration"},
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": {"s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration"},
    "aws:s3/bucketPolicy:BucketPolicy": {"s3:PutBucketPolicy", "s3:GetBucketPolicy", "s3:DeleteBucketPolicy"},
    # The image cache: ECR makes its service-linked role AWSServiceRoleForECRPullThroughCache with the first rule.
    "aws:ecr/pullThroughCacheRule:PullThroughCacheRule": {"ecr:CreatePullThroughCacheRule", "ecr:DescribePullThroughCacheRules",
                                                          "ecr:UpdatePullThroughCacheRule", "ecr:DeletePullThroughCacheRule",
                                                          "iam:CreateServiceLinkedRole"},
    "aws:secretsmanager/secret:Secret": {"secretsmanager:CreateSecret", "secretsmanager:DescribeSecret", "secretsmanager:GetResourcePolicy",
                                         "secretsmanager:UpdateSecret", "secretsmanager:DeleteSecret", "secretsmanager:TagResource",
                                         "secretsmanager:UntagResource"},
    "aws:secretsmanager/secretVersion:SecretVersion": {"secretsmanager:PutSecretValue", "secretsmanager:GetSecretValue",
                                                       "secretsmanager:UpdateSecretVersionStage"},
}  # fmt: skip
READ_ONLY = re.compile(r"\w+:(Describe|Get|List)\w*")


def policy(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def actions(document: dict[str, Any]) -> set[str]:
    return {a for statement in document["Statement"] for a in statement["Action"]}


@lru_cache(maxsize=None)
def renderings() -> list[Any]:
    """Every committed stack; the longest, which makes every resource type the program has; and one in an
    existing VPC, whose subnets the preview looks up."""
    existing_vpc = longest_document()
    existing_vpc["config"]["vllm-platform:cluster"]["vpc"] = {
        "id": "vpc-0123456789abcdef0",
        "privateSubnetIds": ["subnet-0123456789abcdefa", "subnet-0123456789abcdefb"],
        "publicSubnetIds": ["subnet-0123456789abcdefc"],
    }
    return [
        *(rendered_stack(s) for s in COMMITTED_STACKS),
        render_document(longest_document(), "longest"),
        render_document(existing_vpc, "existing-vpc"),
    ]




def test_every_provider_function_and_resource_type_is_accounted_for() -> None:
    calls = {c for r in renderings() for c in r.calls if c.startswith("aws:")}
    assert calls - set(INVOKE_ACTIONS) == set(), "a new provider function: add what it calls here and to iam/"
    types = {res.type for r in renderings() for res in r.resources if res.type.startswith("aws:")}
    assert types - set(RESOURCE_ACTIONS) == set(), "a new resource type: add what managing it calls here and to iam/"


def test_the_preview_policy_allows_what_a_preview_asks_and_nothing_else() -> None:
    needed = {a for r in renderings() for c in r.calls if c in INVOKE_ACTIONS for a in INVOKE_ACTIONS[c]}
    granted = actions(policy(PREVIEW_POLICY))
    assert granted == needed
    assert all(READ_ONLY.fullmatch(a) for a in granted), "the PR checks' role can change nothing"
    (own_role,) = [s for s in policy(PREVIEW_POLICY)["Statement"] if "iam:GetRole" in s["Action"]]
    assert own_role["Resource"] != "*", "it looks up the preview role itself, no other"


def test_the_deploy_policy_allows_what_an_up_does_and_nothing_else() -> None:
    needed = {a for r in renderings() for c in r.calls if c in INVOKE_ACTIONS for a in INVOKE_ACTIONS[c]}
    needed |= {a for t in {res.type for r in renderings() for res in r.resources} if t in RESOURCE_ACTIONS for a in RESOURCE_ACTIONS[t]}
    granted = actions(policy(DEPLOY_POLICY))
    assert needed - granted == set(), "missing"
    assert granted - needed == set(), "granted but never used"


def test_roles_are_passed_only_to_eks_and_service_linked_roles_made_only_for_it() -> None:
    statements = policy(DEPLOY_POLICY)["Statement"]
    (passing,) = [s for s in statements if s["Action"] == ["iam:PassRole"]]
    assert set(passing["Condition"]["StringEquals"]["iam:PassedToService"]) == {"eks.amazonaws.com", "pods.eks.amazonaws.com"}
    (linked,) = [s for s in statements if s["Action"] == ["iam:CreateServiceLinkedRole"]]
    assert set(linked["Condition"]["StringEquals"]["iam:AWSServiceName"]) == {
        "eks.amazonaws.com", "eks-nodegroup.amazonaws.com", "autoscaling.amazonaws.com", "pullthroughcache.ecr.amazonaws.com",
    }  # fmt: skip


def iam_pattern(resource: str) -> re.Pattern[str]:
    """A policy's Resource as IAM matches it: * any run of characters, slashes included, ? any one."""
    return re.compile(".*".join(".".join(map(re.escape, part.split("?"))) for part in resource.split("*")))


def allows(statement: dict[str, Any], arn: str) -> bool:
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    return any(iam_pattern(r).fullmatch(arn) for r in resources)


def test_the_preview_role_the_policy_names_is_the_one_the_stacks_and_the_readme_name() -> None:
    (own_role,) = [s for s in policy(PREVIEW_POLICY)["Statement"] if "iam:GetRole" in s["Action"]]
    viewers = {arn for s in COMMITTED_STACKS for arn in rendered_stack(s).config.cluster.viewer_principal_arns}
    assert viewers and all(allows(own_role, arn) for arn in viewers), viewers
    names = {arn.rpartition("/")[2] for arn in viewers}
    assert all(f"`{name}`" in (render.PROJECT_ROOT / "README.md").read_text() for name in names), "the README says what to rename"
    # The same role in China and GovCloud, and under a path; no other role, nor one whose name merely ends in it.
    (name,) = names
    assert all(allows(own_role, f"arn:{partition}:iam::123456789012:role/{path}{name}")
               for partition in ("aws", "aws-cn", "aws-us-gov") for path in ("", "ci/", "ci/github/"))  # fmt: skip
    assert not allows(own_role, "arn:aws:iam::123456789012:role/vllm-platform-deploy")
    assert not allows(own_role, f"arn:aws:iam::123456789012:role/ci/other-{name}")


# The tag every role the program makes carries (vllm_platform/aws/eks.py resource_tags), which the deploy policy's
# role statements require: a role without it (the deploy role's own, any other in the account) it may not change.
PROJECT_TAG = "pulumi:project"


def state_changing_iam_statements() -> list[dict[str, Any]]:
    return [s for s in policy(DEPLOY_POLICY)["Statement"] if any(a.startswith("iam:") and not READ_ONLY.fullmatch(a) for a in s["Action"])]


def test_no_iam_action_that_changes_state_is_allowed_without_a_condition() -> None:
    statements = state_changing_iam_statements()
    assert statements and all("Condition" in s for s in statements), [s["Sid"] for s in statements if "Condition" not in s]
    # Every one but the service-linked roles' (conditioned on the service) and PassRole's (on the service it is
    # passed to) on the program's own tag: on the role's, or for a new role on the request's.
    tagged = [s for s in statements if s["Action"] not in (["iam:CreateServiceLinkedRole"], ["iam:PassRole"])]
    project = render.project_name()
    for statement in tagged:
        equals = statement["Condition"]["StringEquals"]
        key = "aws:RequestTag" if "iam:CreateRole" in statement["Action"] else "aws:ResourceTag"
        assert equals == {f"{key}/{PROJECT_TAG}": project}, statement["Sid"]
    # TagRole beside CreateRole: IAM may authorize a create's tags as a TagRole too, and they carry the project tag.
    assert any(s["Action"] == ["iam:CreateRole", "iam:TagRole"] for s in tagged), "a new role must carry the tag to be changed later"


def test_every_role_the_program_makes_carries_the_tag_and_the_path_the_deploy_policy_requires() -> None:
    roles = [res for r in renderings() for res in r.resources if res.type == "aws:iam/role:Role"]
    assert roles
    for role in roles:
        assert role.inputs.get("tags", {}).get(PROJECT_TAG) == render.project_name(), (role.name, role.inputs.get("tags"))
        assert role.inputs.get("path") == ROLE_PATH, role.name


def test_the_deploy_role_creates_tags_changes_and_passes_only_roles_under_the_programs_path() -> None:
    """The tag alone is no boundary: TagRole on a create's request tag could tag any existing role, the deploy role's
    own, into the changeable set. A path is fixed when a role is made, so under it are only the program's roles."""
    statements = [
        s for s in policy(DEPLOY_POLICY)["Statement"]
        if any(a.startswith("iam:") and not READ_ONLY.fullmatch(a) and a != "iam:CreateServiceLinkedRole" for a in s["Action"])
    ]  # fmt: skip
    assert {a for s in statements for a in s["Action"]} >= {"iam:CreateRole", "iam:TagRole", "iam:PutRolePolicy", "iam:PassRole"}
    for statement in statements:
        assert statement["Resource"] == f"arn:*:iam::*:role{ROLE_PATH}*", statement["Sid"]
        assert allows(statement, f"arn:aws-cn:iam::123456789012:role{ROLE_PATH}model-llama-8b-a1b2c3d")
        assert not allows(statement, "arn:aws:iam::123456789012:role/vllm-platform-deploy")
        assert not allows(statement, "arn:aws:iam::123456789012:role/ci/vllm-platform-deploy")
        assert not allows(statement, "arn:aws:iam::123456789012:role/OrganizationAccountAccessRole")
    # No limit on the other tag keys: a stack's aws:defaultTags (a team, a cost centre) go on every role too.
    assert not any("aws:TagKeys" in json.dumps(s.get("Condition", {})) for s in statements)


def test_the_deploy_role_reads_only_the_pull_through_caches_secrets_and_launches_only_from_templates() -> None:
    secrets = [s for s in policy(DEPLOY_POLICY)["Statement"] if any(a.startswith("secretsmanager:") for a in s["Action"])]
    assert secrets and all(s["Resource"] == f"arn:*:secretsmanager:*:*:secret:{documents.PULL_THROUGH_SECRET_PREFIX}*" for s in secrets)
    assert all(a.startswith("secretsmanager:") for s in secrets for a in s["Action"])
    rendered = {res.inputs["namePrefix"] for r in renderings() for res in r.resources if res.type == "aws:secretsmanager/secret:Secret"}
    assert rendered and all(allows(secrets[0], f"arn:aws:secretsmanager:us-west-2:123456789012:secret:{p}AbCdEf") for p in rendered)
    assert not allows(secrets[0], "arn:aws:secretsmanager:us-west-2:123456789012:secret:prod/database-AbCdEf")
    (launch,) = [s for s in policy(DEPLOY_POLICY)["Statement"] if "ec2:RunInstances" in s["Action"]]
    assert launch["Action"] == ["ec2:RunInstances"] and launch["Condition"] == {"ArnLike": {"ec2:LaunchTemplate": "arn:*:ec2:*:*:launch-template/*"}}


@pytest.mark.parametrize("path", [PREVIEW_POLICY, DEPLOY_POLICY], ids=["preview", "deploy"])
def test_each_policy_fits_one_managed_policy(path: Path) -> None:
    document = policy(path)
    assert document["Version"] == "2012-10-17" and all(s["Effect"] == "Allow" for s in document["Statement"])
    assert len(re.sub(r"\s", "", path.read_text())) <= MANAGED_POLICY_MAX_CHARS


@pytest.mark.parametrize(
    "workflow, path",
    [("pull-request.yml", PREVIEW_POLICY), ("pulumi-up.yml", DEPLOY_POLICY)],
)
def test_the_workflows_and_the_readme_name_the_policies(workflow: str, path: Path) -> None:
    relative = str(path.relative_to(render.PROJECT_ROOT))
    assert relative in (render.PROJECT_ROOT / ".github" / "workflows" / workflow).read_text()
    assert relative in (render.PROJECT_ROOT / "README.md").read_text()


# The AWS Load Balancer Controller's published policy, statement by statement: its actions and resources as
# kubernetes-sigs/aws-load-balancer-controller docs/install/iam_policy.json has them at tag v3.5.0 (commit
# 11eb202c, the app version of chart 3.5.0). Only the conditions are the platform's own (the cluster tag
# named, not merely present: tests/test_gateway.py), so an action dropped or added here is a drift.
ELB = "arn:aws:elasticloadbalancing:*:*"
SECURITY_GROUPS = "arn:aws:ec2:*:*:security-group/*"
BALANCERS = [f"{ELB}:targetgroup/*/*", f"{ELB}:loadbalancer/net/*/*", f"{ELB}:loadbalancer/app/*/*"]
LISTENERS = [f"{ELB}:listener/net/*/*/*", f"{ELB}:listener/app/*/*/*", f"{ELB}:listener-rule/net/*/*/*", f"{ELB}:listener-rule/app/*/*/*"]
LOAD_BALANCER_CONTROLLER_V3_5_0: list[tuple[set[str], Any]] = [
    ({"iam:CreateServiceLinkedRole"}, "*"),
    ({"ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones", "ec2:DescribeInternetGateways",
      "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
      "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:GetCoipPoolUsage", "ec2:DescribeCoipPools",
      "ec2:GetSecurityGroupsForVpc", "ec2:DescribeIpamPools", "ec2:DescribeRouteTables", "elasticloadbalancing:DescribeLoadBalancers",
      "elasticloadbalancing:DescribeLoadBalancerAttributes", "elasticloadbalancing:DescribeListeners",
      "elasticloadbalancing:DescribeListenerCertificates", "elasticloadbalancing:DescribeSSLPolicies", "elasticloadbalancing:DescribeRules",
      "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
      "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTags", "elasticloadbalancing:DescribeTrustStores",
      "elasticloadbalancing:DescribeListenerAttributes", "elasticloadbalancing:DescribeCapacityReservation"}, "*"),
    ({"cognito-idp:DescribeUserPoolClient", "acm:ListCertificates", "acm:DescribeCertificate", "iam:ListServerCertificates",
      "iam:GetServerCertificate", "waf-regional:GetWebACL", "waf-regional:GetWebACLForResource", "waf-regional:AssociateWebACL",
      "waf-regional:DisassociateWebACL", "wafv2:GetWebACL", "wafv2:GetWebACLForResource", "wafv2:AssociateWebACL",
      "wafv2:DisassociateWebACL", "shield:GetSubscriptionState", "shield:DescribeProtection", "shield:CreateProtection",
      "shield:DeleteProtection"}, "*"),
    ({"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"}, "*"),
    ({"ec2:CreateSecurityGroup"}, "*"),
    ({"ec2:CreateTags"}, SECURITY_GROUPS),
    ({"ec2:CreateTags", "ec2:DeleteTags"}, SECURITY_GROUPS),
    ({"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"}, "*"),
    ({"elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"}, "*"),
    ({"elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener", "elasticloadbalancing:CreateRule",
      "elasticloadbalancing:DeleteRule"}, "*"),
    ({"elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"}, BALANCERS),
    ({"elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"}, LISTENERS),
    ({"elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType", "elasticloadbalancing:SetSecurityGroups",
      "elasticloadbalancing:SetSubnets", "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
      "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
      "elasticloadbalancing:ModifyListenerAttributes", "elasticloadbalancing:ModifyCapacityReservation",
      "elasticloadbalancing:ModifyIpPools"}, "*"),
    ({"elasticloadbalancing:AddTags"}, BALANCERS),
    ({"elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"}, f"{ELB}:targetgroup/*/*"),
    ({"elasticloadbalancing:SetWebAcl", "elasticloadbalancing:ModifyListener", "elasticloadbalancing:AddListenerCertificates",
      "elasticloadbalancing:RemoveListenerCertificates", "elasticloadbalancing:ModifyRule", "elasticloadbalancing:SetRulePriorities"}, "*"),
]  # fmt: skip


def published_drift(statements: list[dict[str, Any]]) -> list[str]:
    """How the statements' actions and resources differ from the published ones, statement by statement."""
    if len(statements) != len(LOAD_BALANCER_CONTROLLER_V3_5_0):
        return [f"{len(statements)} statements, the published policy has {len(LOAD_BALANCER_CONTROLLER_V3_5_0)}"]
    drift = []
    for index, (statement, (published, resource)) in enumerate(zip(statements, LOAD_BALANCER_CONTROLLER_V3_5_0)):
        granted = set(statement["Action"])
        if granted != published:
            drift.append(f"statement {index}: missing {sorted(published - granted)}, extra {sorted(granted - published)}")
        if statement["Resource"] != resource:
            drift.append(f"statement {index}: resource {statement['Resource']!r}, published {resource!r}")
    return drift


def rendered_load_balancer_controller_policy() -> list[dict[str, Any]]:
    rendering = rendered_stack("prod")
    (policy,) = [r for r in rendering.resources if r.type == "aws:iam/rolePolicy:RolePolicy" and r.name == "aws-load-balancer-controller"]
    statements: list[dict[str, Any]] = json.loads(policy.inputs["policy"])["Statement"]
    return statements


def test_the_load_balancer_controller_gets_the_published_actions_on_the_published_resources() -> None:
    assert published_drift(rendered_load_balancer_controller_policy()) == []


def test_a_dropped_load_balancer_controller_action_is_drift() -> None:
    statements = rendered_load_balancer_controller_policy()
    for index, statement in enumerate(statements):
        for action in statement["Action"]:
            dropped = [dict(s, Action=[a for a in s["Action"] if a != action]) if i == index else s for i, s in enumerate(statements)]
            assert published_drift(dropped), f"dropping {action} from statement {index} went unnoticed"
