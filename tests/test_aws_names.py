"""Every name the program gives AWS fits its service's limit, at the longest names the config accepts."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator

import pytest

from tests.conftest import ADMIN, minimal_document, render_document
from vllm_platform import names
from vllm_platform.config.pools import GPU_POOL_NAME_MAX_LENGTH
from vllm_platform.contract import LABEL_MAX_LENGTH

# Resource type -> (its name field, its name-prefix field): how Pulumi's name for it is made.
NAMED = {
    "aws:iam/role:Role": ("name", "namePrefix"),
    "aws:iam/rolePolicy:RolePolicy": ("name", "namePrefix"),
    "aws:eks/nodeGroup:NodeGroup": ("nodeGroupName", "nodeGroupNamePrefix"),
    "aws:ec2/launchTemplate:LaunchTemplate": ("name", "namePrefix"),
    "aws:ec2/placementGroup:PlacementGroup": ("name", None),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "namePrefix"),
    "aws:eks/cluster:Cluster": ("name", None),
    "aws:sqs/queue:Queue": ("name", "namePrefix"),
    "aws:cloudwatch/eventRule:EventRule": ("name", "namePrefix"),
    "aws:cloudwatch/eventTarget:EventTarget": ("targetId", None),
    "aws:s3/bucket:Bucket": ("bucket", "bucketPrefix"),
    "aws:secretsmanager/secret:Secret": ("name", "namePrefix"),
    "aws:ecr/pullThroughCacheRule:PullThroughCacheRule": ("ecrRepositoryPrefix", None),
}
# Types AWS gives an id of its own, or whose name is AWS's (an add-on's), or that have none.
NAMELESS = {
    "aws:ec2/tag:Tag", "aws:sqs/queuePolicy:QueuePolicy", "aws:ec2/eip:Eip", "aws:ec2/internetGateway:InternetGateway", "aws:ec2/natGateway:NatGateway",
    "aws:ec2/route:Route", "aws:ec2/routeTable:RouteTable", "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:ec2/subnet:Subnet", "aws:ec2/vpc:Vpc", "aws:ec2/vpcEndpoint:VpcEndpoint", "aws:eks/accessEntry:AccessEntry",
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "aws:eks/addon:Addon",
    "aws:eks/podIdentityAssociation:PodIdentityAssociation", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:kms/key:Key", "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:secretsmanager/secretVersion:SecretVersion",
}  # fmt: skip
# EC2's API model: tag keys of at most 127 characters (the general tagging guide says 128), values 256.
TAG_KEY_MAX, TAG_VALUE_MAX = 127, 256

LONGEST_CLUSTER = "c" + "l" * (LABEL_MAX_LENGTH - 2) + "x"
LONGEST_POOL = "p" * GPU_POOL_NAME_MAX_LENGTH
LONGEST_MODEL = "m" + "o" * (LABEL_MAX_LENGTH - 2) + "l"


def longest_document() -> dict[str, Any]:
    document = minimal_document(
        models=[
            {"name": LONGEST_MODEL, "model": "s3://acme-models/llama-3.1-8b/", "parametersBillions": 8, "gpuPool": LONGEST_POOL},
            # A hub model with a revision: staged into the stack's cache, with a staging role of its own.
            {"name": "h" + LONGEST_MODEL[1:], "model": "meta-llama/Llama-3.1-8B-Instruct", "revision": "0" * 40, "gpuPool": LONGEST_POOL},
        ],
        images={"dockerHub": {"username": "acmeplatform", "accessToken": {"secure": "AAABAdockerHubToken"}}},
        observability={"alertmanager": {
            "receivers": [{"name": "topic", "sns": {"topicArn": "arn:aws:sns:us-west-2:123456789012:llm-alerts"}}],
            "critical": ["topic"],
        }},
    )  # fmt: skip
    document["config"]["vllm-platform:cluster"] = {
        "name": LONGEST_CLUSTER,
        "adminPrincipalArns": [ADMIN],
        "gpuNodePools": [
            {"name": LONGEST_POOL, "instanceTypes": ["g5.xlarge"], "maxSize": 2},
            {"name": "p4d", "instanceTypes": ["p4d.24xlarge"], "maxSize": 2, "rootVolumeGiB": 300, "efa": True, "placementGroup": True},
        ],
    }
    return document


def physical_name(resource: Any) -> str:
    """The name AWS gets: given, or a prefix plus the provider's 26 digits, or the logical name plus `-` and 7 hex."""
    field, prefix_field = NAMED[resource.type]
    if resource.inputs.get(field):
        return str(resource.inputs[field])
    if prefix_field and resource.inputs.get(prefix_field):
        return str(resource.inputs[prefix_field]) + "0" * names.PREFIX_SUFFIX
    return resource.name + "-" + "f" * (names.AUTO_NAME_SUFFIX - 1)


def tags_of(inputs: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield from (inputs.get("tags") or {}).items()
    for spec in inputs.get("tagSpecifications") or []:
        yield from (spec.get("tags") or {}).items()


@lru_cache(maxsize=None)
def longest_rendering() -> Any:
    return render_document(longest_document(), "longest")


def test_the_longest_names_render_and_every_aws_type_is_accounted_for() -> None:
    aws_types = {r.type for r in longest_rendering().resources if r.type.startswith("aws:")}
    assert aws_types - set(NAMED) - NAMELESS == set(), "a new AWS type: add it to NAMED or NAMELESS here, and its limit to vllm_platform/names.py"
    assert set(NAMED) <= aws_types, "the longest stack should make every named type"
    assert set(NAMED) <= set(names.AWS_NAME_LIMITS)


@pytest.mark.parametrize("resource_type", sorted(NAMED))
def test_every_generated_name_fits_its_limit(resource_type: str) -> None:
    limit = names.AWS_NAME_LIMITS[resource_type]
    made = [(r.name, physical_name(r)) for r in longest_rendering().resources if r.type == resource_type]
    assert made
    for logical, name in made:
        assert len(name) <= limit, f"{resource_type} {logical}: {name!r} has {len(name)} characters, above {limit}"


def test_a_63_character_s3_model_gets_a_role_within_iams_64() -> None:
    (role,) = [r for r in longest_rendering().resources if r.type == names.IAM_ROLE and LONGEST_MODEL[:20] in r.name]
    assert len(physical_name(role)) <= 64
    (association,) = [r for r in longest_rendering().resources if r.type == "aws:eks/podIdentityAssociation:PodIdentityAssociation"
                      and r.inputs["serviceAccount"] == LONGEST_MODEL]  # fmt: skip
    assert association.inputs["namespace"] == "inference"


def test_every_tag_fits_ec2s_limits() -> None:
    for resource in longest_rendering().resources:
        for key, value in tags_of(resource.inputs):
            assert len(key) <= TAG_KEY_MAX and len(str(value)) <= TAG_VALUE_MAX, (resource.name, key)


@pytest.mark.parametrize(
    "resource_type, base",
    [(names.IAM_ROLE, "model-" + "m" * 63), (names.NODE_GROUP, "gpu-" + "p" * 70), ("aws:sqs/queue:Queue", "q" * 100)],
)
def test_a_name_too_long_is_cut_to_its_limit_with_a_hash_and_one_that_fits_is_kept(resource_type: str, base: str) -> None:
    logical = names.logical_name(resource_type, base)
    assert len(logical) + names.AUTO_NAME_SUFFIX == names.AWS_NAME_LIMITS[resource_type]
    assert logical != names.logical_name(resource_type, base + "x"), "two long names stay two"
    prefix = names.name_prefix(resource_type, base)
    assert len(prefix) + names.PREFIX_SUFFIX <= names.AWS_NAME_LIMITS[resource_type] and prefix.endswith("-")
    short = base[:10]
    assert names.logical_name(resource_type, short) == short and names.name_prefix(resource_type, short) == short + "-"
