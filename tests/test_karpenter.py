"""The GPU pools on Karpenter: NodePools and EC2NodeClasses as the config describes them, the controller's IAM
scoped as Karpenter's reference scopes it, and the interruption queue wired to its rules."""

from __future__ import annotations

import email
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import (
    COMMITTED_STACKS, minimal_document, objects_of, render_document, rendered_stack, resources_of, stack_document, stack_plan,
)  # fmt: skip
from tools import mocks, schemas
from vllm_platform.aws import karpenter as policies
from vllm_platform.contract import GPU_POOL_LABEL, GPU_TAINT, KARPENTER_DISCOVERY_TAG
from vllm_platform.k8s import karpenter

CREATED_STACKS = [s for s in COMMITTED_STACKS if stack_plan(s).config.cluster.existing is None]
# IAM's limit on all of a role's inline policies together, in characters without whitespace.
INLINE_POLICIES_MAX_CHARS = 10240


def one(rendering: Any, kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in objects_of(rendering, kind) if m["metadata"]["name"] == name]
    return found


def requirement(pool: dict[str, Any], key: str) -> list[str]:
    (found,) = [r for r in pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
    assert found["operator"] == "In"
    return found["values"]


def aws_inputs(rendering: Any, type_: str) -> list[Any]:
    return [r for r in rendering.resources if r.type == type_]


def physical(resource: Any) -> str:
    """The name AWS knows the resource by, which its ARN holds: Pulumi's auto-name where the program gives none."""
    return mocks._auto_name(resource.name, resource.inputs)


def role_arn(role: Any, region: str = mocks.DEFAULT_REGION) -> str:
    return mocks._fake_arn("aws:iam/role:Role", mocks.arn_resource_name("aws:iam/role:Role", physical(role), role.inputs), region)


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_every_gpu_pool_has_a_node_pool_and_a_node_class_valid_against_karpenters_crds(stack: str, crd_dir: Path) -> None:
    rendering = rendered_stack(stack)
    pools = {p["metadata"]["name"] for p in objects_of(rendering, "NodePool")}
    classes = {c["metadata"]["name"] for c in objects_of(rendering, "EC2NodeClass")}
    assert pools == classes == {f"gpu-{p.name}" for p in rendering.plan.pools}
    custom = [*objects_of(rendering, "NodePool"), *objects_of(rendering, "EC2NodeClass")]
    assert schemas.validate_manifests(custom, rendering.config.cluster.kubernetes_version, crd_dir) == []
    broken = json.loads(json.dumps(custom[0]))
    broken["spec"]["disruption"]["consolidationPolicy"] = "Never"
    assert schemas.validate_manifests([broken], "1.34", crd_dir)


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_node_pools_keep_the_node_contract_and_the_pools_bounds(stack: str) -> None:
    rendering = rendered_stack(stack)
    for pool in rendering.plan.pools:
        manifest = one(rendering, "NodePool", f"gpu-{pool.name}")
        template = manifest["spec"]["template"]
        assert template["metadata"]["labels"] == {"node-type": "gpu", GPU_POOL_LABEL: pool.name, "nvidia.com/gpu.present": "true"}
        assert template["spec"]["taints"] == [GPU_TAINT.manifest()]
        assert requirement(manifest, "node.kubernetes.io/instance-type") == list(pool.instance_types)
        assert requirement(manifest, "karpenter.sh/capacity-type") == list(pool.capacity_types)
        assert manifest["spec"]["limits"]["nvidia.com/gpu"] == str(pool.max_size * pool.gpus_per_node)
        assert template["spec"]["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": f"gpu-{pool.name}"}
        # The cost output is the limit, at on-demand prices: the same maxSize nodes.
        assert rendering.outputs["gpuPools"][pool.name]["maxGpus"] == pool.max_size * pool.gpus_per_node


def test_a_pool_launches_only_in_the_zones_that_offer_all_its_types() -> None:
    document = minimal_document()
    document["config"]["vllm-platform:cluster"]["vpc"] = {"zones": ["us-west-2a", "us-west-2b", "us-west-2d"]}
    document["config"]["vllm-platform:cluster"]["gpuNodePools"] = [
        {"name": "g5", "instanceTypes": ["g5.xlarge"], "maxSize": 2},
        {"name": "p4d", "instanceTypes": ["p4d.24xlarge"], "maxSize": 2, "rootVolumeGiB": 300, "placementGroup": True},
    ]
    rendering = render_document(document)
    # us-west-2d (usw2-az4) offers p4d but no g5, in the dated offerings table.
    assert requirement(one(rendering, "NodePool", "gpu-g5"), "topology.kubernetes.io/zone") == ["us-west-2a", "us-west-2b"]
    # A cluster placement group lives in one zone.
    assert requirement(one(rendering, "NodePool", "gpu-p4d"), "topology.kubernetes.io/zone") == ["us-west-2a"]
    (group,) = aws_inputs(rendering, "aws:ec2/placementGroup:PlacementGroup")
    assert group.inputs["strategy"] == "cluster" and "name" not in group.inputs, "a fixed name blocks replacement"
    assert one(rendering, "EC2NodeClass", "gpu-p4d")["spec"]["placementGroupSelector"] == {"name": f"gpu-p4d-{mocks.FAKE_NAME_SUFFIX}"}


def node_config_parts(user_data: str) -> list[Any]:
    """The NodeConfig documents of a MIME multipart user data, as nodeadm reads them."""
    message = email.message_from_string(user_data)
    assert message.is_multipart() and message.get_content_type() == "multipart/mixed"
    parts = [p for p in message.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["application/node.eks.aws"]
    return [yaml.safe_load(p.get_payload()) for p in parts]


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_node_classes_pin_the_ami_require_imdsv2_and_encrypt_with_the_platform_key(stack: str) -> None:
    rendering = rendered_stack(stack)
    key_arn = mocks.FAKE_STATE["aws:kms/key:Key"]("secrets", {})["arn"]
    (node_role,) = [r for r in aws_inputs(rendering, "aws:iam/role:Role") if r.name == "karpenter-node"]
    for pool in rendering.plan.pools:
        spec = one(rendering, "EC2NodeClass", f"gpu-{pool.name}")["spec"]
        assert spec["amiSelectorTerms"] == [{"alias": rendering.config.cluster.gpu_ami_alias}]
        assert re.fullmatch(r"al2023@v20\d{6}", rendering.config.cluster.gpu_ami_alias)
        assert spec["metadataOptions"]["httpTokens"] == "required" and spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        (root,) = spec["blockDeviceMappings"]
        assert root["rootVolume"] is True
        assert root["ebs"] == {
            "volumeSize": f"{pool.root_volume_gib}Gi", "volumeType": "gp3", "iops": 6000, "throughput": 600,
            "encrypted": True, "kmsKeyID": key_arn, "deleteOnTermination": True,
        }  # fmt: skip
        assert spec["instanceStorePolicy"] == "RAID0"
        (node_config,) = node_config_parts(spec["userData"])
        assert node_config == {"apiVersion": "node.eks.aws/v1alpha1", "kind": "NodeConfig", "spec": {"featureGates": {"FastImagePull": True}}}
        discovery = {"tags": {KARPENTER_DISCOVERY_TAG: rendering.config.cluster.name}}
        assert spec["subnetSelectorTerms"] == spec["securityGroupSelectorTerms"] == [discovery]
        assert spec["role"] == mocks.FAKE_STATE["aws:iam/role:Role"](node_role.name, node_role.inputs)["name"]
        assert not [k for k in spec["tags"] if k.startswith(karpenter.RESTRICTED_TAG_PREFIXES)]


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_the_subnets_and_the_cluster_security_group_carry_the_discovery_tag(stack: str) -> None:
    rendering = rendered_stack(stack)
    name = rendering.config.cluster.name
    private = [r for r in aws_inputs(rendering, "aws:ec2/subnet:Subnet") if r.name.startswith("private-")]
    assert private and all(s.inputs["tags"][KARPENTER_DISCOVERY_TAG] == name for s in private)
    public = [r for r in aws_inputs(rendering, "aws:ec2/subnet:Subnet") if r.name.startswith("public-")]
    assert not [s for s in public if KARPENTER_DISCOVERY_TAG in s.inputs["tags"]], "GPU nodes stay off the public subnets"
    (tag,) = aws_inputs(rendering, "aws:ec2/tag:Tag")
    assert tag.inputs == {"resourceId": "sg-0eks0cluster0000", "key": KARPENTER_DISCOVERY_TAG, "value": name}


def test_an_existing_vpcs_private_subnets_get_the_discovery_tag_from_the_program() -> None:
    document = minimal_document()
    document["config"]["vllm-platform:cluster"]["vpc"] = {
        "id": "vpc-0123456789abcdef0", "privateSubnetIds": ["subnet-0123456789abcdefa", "subnet-0123456789abcdefb"],
    }  # fmt: skip
    tagged = {t.inputs["resourceId"] for t in aws_inputs(render_document(document), "aws:ec2/tag:Tag")}
    assert tagged == {"sg-0eks0cluster0000", "subnet-0123456789abcdefa", "subnet-0123456789abcdefb"}


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_disruption_never_repacks_a_serving_node_nor_cuts_a_drain_short(stack: str) -> None:
    rendering = rendered_stack(stack)
    for pool in rendering.plan.pools:
        manifest = one(rendering, "NodePool", f"gpu-{pool.name}")
        disruption = manifest["spec"]["disruption"]
        assert disruption["consolidationPolicy"] == "WhenEmpty"
        assert disruption["budgets"] == [{"nodes": "1"}]
        grace = int(manifest["spec"]["template"]["spec"]["terminationGracePeriod"].removesuffix("s"))
        for model in [m for m in rendering.plan.models if m.pool is not None and m.pool.name == pool.name]:
            assert grace >= model.termination_grace_seconds, model.name
            assert grace >= model.rollout_wave_seconds, "room for a replacement to come up before the PDB lets go"


def test_a_models_edit_leaves_its_pools_nodes_alone_until_its_drain_crosses_a_half_hour() -> None:
    """Karpenter replaces every node of a pool whose NodePool template changes (drift), so a model's edit that
    moves its rollout wave must not change the template, unless the wave outgrows the grace period."""

    def template_and_wave(shutdown_seconds: int) -> tuple[dict[str, Any], int]:
        document = minimal_document()
        document["config"]["vllm-platform:models"][0]["shutdownTimeoutSeconds"] = shutdown_seconds
        rendering = render_document(document)
        ((pool,), (model,)) = objects_of(rendering, "NodePool"), rendering.plan.models
        return pool["spec"]["template"], model.rollout_wave_seconds

    (default, wave), (longer, longer_wave) = template_and_wave(60), template_and_wave(240)
    assert longer_wave > wave and longer == default and default["spec"]["terminationGracePeriod"] == "1800s"
    crossing, crossing_wave = template_and_wave(1800)
    assert crossing["spec"]["terminationGracePeriod"] == "3600s" and crossing_wave <= 3600 < crossing_wave + 1800


@pytest.mark.parametrize(("keys", "consolidate_after", "expire_after"), [({}, "20m", "Never"), ({"consolidateAfter": "5m", "expireAfter": "720h"}, "5m", "720h")])
def test_a_pools_consolidation_wait_and_expiry_come_from_its_config(keys: dict[str, str], consolidate_after: str, expire_after: str) -> None:
    document = minimal_document()
    document["config"]["vllm-platform:cluster"]["gpuNodePools"][0].update(keys)
    (pool,) = objects_of(render_document(document), "NodePool")
    assert pool["spec"]["disruption"]["consolidateAfter"] == consolidate_after
    assert pool["spec"]["template"]["spec"]["expireAfter"] == expire_after


def test_node_classes_and_pools_are_made_after_the_controller_and_so_destroyed_before_it() -> None:
    """Their finalizers need the running controller (a class's removes its instance profile and launch templates)."""
    rendering = rendered_stack("prod")
    wiring = [r for r in rendering.resources if r.type.startswith("kubernetes:karpenter")]
    assert wiring
    for resource in wiring:
        assert "kubernetes:helm.sh/v3:Release::karpenter" in resource.dependencies, resource.name


def test_nodes_never_expire_unless_the_pool_asks() -> None:
    """Expiry is forceful (no budget holds it) and with the AMI pinned brings the same one back: off by default."""
    def expiry(pool_keys: dict[str, Any]) -> str:
        document = minimal_document()
        document["config"]["vllm-platform:cluster"]["gpuNodePools"][0].update(pool_keys)
        return str(one(render_document(document), "NodePool", "gpu-g5")["spec"]["template"]["spec"]["expireAfter"])

    assert expiry({}) == "Never"
    assert expiry({"expireAfter": "720h"}) == "720h"


def test_a_spot_only_pool_gets_no_on_demand_fallback_unless_it_asks() -> None:
    def capacity(types: list[str]) -> list[str]:
        document = minimal_document()
        document["config"]["vllm-platform:cluster"]["gpuNodePools"][0]["capacityTypes"] = types
        return requirement(one(render_document(document), "NodePool", "gpu-g5"), "karpenter.sh/capacity-type")

    assert capacity(["spot"]) == ["spot"]
    assert capacity(["spot", "on-demand"]) == ["spot", "on-demand"]


def test_prods_p4d_falls_back_from_its_reservation_to_on_demand_and_g5_from_spot() -> None:
    rendering = rendered_stack("prod")
    p4d = one(rendering, "NodePool", "gpu-p4d")
    assert requirement(p4d, "karpenter.sh/capacity-type") == ["reserved", "on-demand"]
    assert one(rendering, "EC2NodeClass", "gpu-p4d")["spec"]["capacityReservationSelectorTerms"] == [{"id": "cr-0123456789abcdef0"}]
    assert requirement(one(rendering, "NodePool", "gpu-g5"), "karpenter.sh/capacity-type") == ["spot", "on-demand"]
    assert rendering.outputs["gpuPools"]["p4d"]["capacityReservations"] == ["cr-0123456789abcdef0"]
    assert rendering.outputs["gpuPools"]["g5"]["capacityTypes"] == ["spot", "on-demand"]


def test_efa_gives_every_network_card_an_efa_interface() -> None:
    document = minimal_document()
    document["config"]["vllm-platform:cluster"]["gpuNodePools"] = [
        {"name": "p4d", "instanceTypes": ["p4d.24xlarge"], "maxSize": 2, "rootVolumeGiB": 300, "efa": True}
    ]
    document["config"]["vllm-platform:models"] = [{"name": "qwen", "model": "Qwen/Qwen2.5-7B-Instruct", "gpuPool": "p4d"}]
    interfaces = one(render_document(document), "EC2NodeClass", "gpu-p4d")["spec"]["networkInterfaces"]
    assert interfaces[0] == {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}
    assert [(i["networkCardIndex"], i["interfaceType"]) for i in interfaces[1:]] == [(card, "efa-only") for card in range(4)]


# --- IAM, the queue and its rules ------------------------------------------------------------------


def controller_documents(rendering: Any) -> dict[str, dict[str, Any]]:
    return {
        name: json.loads(r.inputs["policy"])
        for r in aws_inputs(rendering, "aws:iam/rolePolicy:RolePolicy")
        if (name := r.name.removeprefix("karpenter-")) in policies.CONTROLLER_POLICY_NAMES and r.name.startswith("karpenter-")
    }


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_the_controller_role_is_scoped_to_this_cluster_as_karpenters_reference_scopes_it(stack: str) -> None:
    rendering = rendered_stack(stack)
    name = rendering.config.cluster.name
    documents = controller_documents(rendering)
    assert sorted(documents) == sorted(policies.CONTROLLER_POLICY_NAMES)
    statements = {s["Sid"]: s for d in documents.values() for s in d["Statement"]}
    owned = f"aws:ResourceTag/kubernetes.io/cluster/{name}"
    for sid in ("AllowScopedEC2LaunchTemplateAccessActions", "AllowScopedResourceTagging", "AllowScopedDeletion"):
        assert statements[sid]["Condition"]["StringEquals"][owned] == "owned", sid
    for sid in ("AllowScopedEC2InstanceActionsWithTags", "AllowScopedResourceCreationTagging", "AllowScopedInstanceProfileCreationActions"):
        assert statements[sid]["Condition"]["StringEquals"]["aws:RequestTag/eks:eks-cluster-name"] == name, sid
    (node_role,) = [r for r in aws_inputs(rendering, "aws:iam/role:Role") if r.name == "karpenter-node"]
    assert statements["AllowPassingInstanceRole"]["Resource"] == role_arn(node_role)
    assert statements["AllowAPIServerEndpointDiscovery"]["Resource"] == f"arn:aws:eks:us-west-2:123456789012:cluster/{name}"
    (queue,) = aws_inputs(rendering, "aws:sqs/queue:Queue")
    assert statements["AllowInterruptionQueueActions"]["Resource"] == mocks._fake_arn("aws:sqs/queue:Queue", physical(queue))
    key_arn = mocks.FAKE_STATE["aws:kms/key:Key"]("secrets", {})["arn"]
    assert statements["EncryptNodeVolumes"]["Resource"] == statements["GrantVolumesTheKey"]["Resource"] == key_arn
    # The key also encrypts the Secrets and the model cache: the controller may use it only through EC2's launches.
    through_ec2 = {"kms:ViaService": "ec2.us-west-2.amazonaws.com"}
    assert statements["EncryptNodeVolumes"]["Condition"] == {"StringEquals": through_ec2}
    assert statements["GrantVolumesTheKey"]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}, "StringEquals": through_ec2}
    # Every statement that may change something is scoped: by a tag condition or by the ARN of one resource.
    for sid, statement in statements.items():
        mutating = [a for a in statement["Action"] if not re.match(r"\w+:(Describe|Get|List)", a)]
        if mutating and statement["Resource"] == "*":
            assert "Condition" in statement, sid
    size = sum(len(json.dumps(d, separators=(",", ":"))) for d in documents.values())
    assert size <= INLINE_POLICIES_MAX_CHARS
    # Each statement's conditions, key by key, as Karpenter v1.14.1's reference policy has them
    # (website/content/en/docs/getting-started/getting-started-with-karpenter/cloudformation.yaml): none dropped.
    cluster, region = f"kubernetes.io/cluster/{name}", "topology.kubernetes.io/region"
    conditions = {sid: {op: set(keys) for op, keys in s.get("Condition", {}).items()} for sid, s in statements.items()}
    scoped_by_pool = {"StringEquals": {f"aws:ResourceTag/{cluster}"}, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool"}}
    created = {f"aws:RequestTag/{cluster}", "aws:RequestTag/eks:eks-cluster-name"}
    assert conditions["AllowScopedEC2LaunchTemplateAccessActions"] == conditions["AllowScopedDeletion"] == scoped_by_pool
    assert conditions["AllowScopedEC2InstanceActionsWithTags"] == {"StringEquals": created, "StringLike": {"aws:RequestTag/karpenter.sh/nodepool"}}
    assert conditions["AllowScopedResourceCreationTagging"] == {"StringEquals": {*created, "ec2:CreateAction"}, "StringLike": {"aws:RequestTag/karpenter.sh/nodepool"}}
    assert conditions["AllowScopedResourceTagging"] == {**scoped_by_pool, "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name"}, "ForAllValues:StringEquals": {"aws:TagKeys"}}
    profile = {f"aws:ResourceTag/{cluster}", f"aws:ResourceTag/{region}"}
    assert conditions["AllowScopedInstanceProfileCreationActions"] == {"StringEquals": {*created, f"aws:RequestTag/{region}"}, "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass"}}
    assert conditions["AllowScopedInstanceProfileTagActions"] == {"StringEquals": {*profile, *created, f"aws:RequestTag/{region}"}, "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass", "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass"}}
    assert conditions["AllowScopedInstanceProfileActions"] == {"StringEquals": profile, "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass"}}
    assert conditions["AllowPassingInstanceRole"] == {"StringEquals": {"iam:PassedToService"}}
    assert conditions["AllowRegionalReadActions"] == {"StringEquals": {"aws:RequestedRegion"}}


# Karpenter v1.14.1's reference controller policies, statement by statement: each Sid's exact actions and resources,
# recorded from website/content/en/docs/getting-started/getting-started-with-karpenter/cloudformation.yaml at tag
# v1.14.1 of aws/karpenter-provider-aws (the page the site publishes as v1.14), policy by policy (NodeLifecyclePolicy,
# IAMIntegrationPolicy, EKSIntegrationPolicy, InterruptionPolicy, ZonalShiftPolicy, ResourceDiscoveryPolicy). Its
# ${AWS::Partition}, ${AWS::Region}, ${AWS::AccountId} and ${ClusterName} are {partition}, {region}, {account} and
# {cluster} here, its node role's and queue's ARNs {node_role} and {queue}. The conditions are held key by key above.
EC2 = "arn:{partition}:ec2:{region}"
LAUNCHED = [f"{EC2}:*:{kind}/*" for kind in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")]
PROFILES = "arn:{partition}:iam::{account}:instance-profile/*"
REFERENCE_POLICY = {
    "node-lifecycle": {
        "AllowScopedEC2InstanceAccessActions": (
            ["ec2:RunInstances", "ec2:CreateFleet"],
            [f"{EC2}::image/*", f"{EC2}::snapshot/*", f"{EC2}:*:security-group/*", f"{EC2}:*:subnet/*",
             f"{EC2}:*:capacity-reservation/*", f"{EC2}:*:placement-group/*"],
        ),
        "AllowScopedEC2LaunchTemplateAccessActions": (["ec2:RunInstances", "ec2:CreateFleet"], f"{EC2}:*:launch-template/*"),
        "AllowScopedEC2InstanceActionsWithTags": (["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"], LAUNCHED),
        "AllowScopedResourceCreationTagging": ("ec2:CreateTags", LAUNCHED),
        "AllowScopedResourceTagging": ("ec2:CreateTags", f"{EC2}:*:instance/*"),
        "AllowScopedDeletion": (["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"], [f"{EC2}:*:instance/*", f"{EC2}:*:launch-template/*"]),
    },
    "iam-integration": {
        "AllowPassingInstanceRole": ("iam:PassRole", "{node_role}"),
        "AllowScopedInstanceProfileCreationActions": (["iam:CreateInstanceProfile"], PROFILES),
        "AllowScopedInstanceProfileTagActions": (["iam:TagInstanceProfile"], PROFILES),
        "AllowScopedInstanceProfileActions": (["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"], PROFILES),
    },
    "eks-integration": {"AllowAPIServerEndpointDiscovery": ("eks:DescribeCluster", "arn:{partition}:eks:{region}:{account}:cluster/{cluster}")},
    "interruption": {"AllowInterruptionQueueActions": (["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"], "{queue}")},
    "zonal-shift": {"AllowZonalShiftStatusReadOnly": (["arc-zonal-shift:GetManagedResource"], "*")},
    "resource-discovery": {
        "AllowRegionalReadActions": (
            ["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
             "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates",
             "ec2:DescribePlacementGroups", "ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"],
            "*",
        ),
        "AllowSSMReadActions": ("ssm:GetParameter", "arn:{partition}:ssm:{region}::parameter/aws/service/*"),
        "AllowPricingReadActions": ("pricing:GetProducts", "*"),
        "AllowUnscopedInstanceProfileListAction": ("iam:ListInstanceProfiles", "*"),
        "AllowInstanceProfileReadActions": ("iam:GetInstanceProfile", PROFILES),
    },
    # The platform's own, not the reference's: the GPU nodes' root volumes are encrypted with the platform key.
    "volume-key": {
        "EncryptNodeVolumes": (["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"], "{key}"),
        "GrantVolumesTheKey": (["kms:CreateGrant"], "{key}"),
    },
}  # fmt: skip


def as_set(value: Any) -> frozenset[str]:
    return frozenset([value] if isinstance(value, str) else value)


def drift_from_reference(documents: dict[str, dict[str, Any]], values: dict[str, str]) -> list[str]:
    """Each policy and Sid whose effect, actions or resources differ from REFERENCE_POLICY's, with these values."""
    expected = {
        (name, sid): ("Allow", as_set(actions), frozenset(r.format(**values) for r in as_set(resources)))
        for name, statements in REFERENCE_POLICY.items()
        for sid, (actions, resources) in statements.items()
    }
    found = {
        (name, s.get("Sid")): (s.get("Effect"), as_set(s.get("Action", [])), as_set(s.get("Resource", [])))
        for name, document in documents.items()
        for s in document["Statement"]
    }
    return [
        f"{name} {sid}: the reference has {expected.get((name, sid))}, the policy {found.get((name, sid))}"
        for name, sid in sorted(expected.keys() | found.keys(), key=str)
        if expected.get((name, sid)) != found.get((name, sid))
    ]


def reference_values(rendering: Any, region: str) -> dict[str, str]:
    """The reference's substitutions for this stack: its partition, region, account and cluster, and its ARNs."""
    (node_role,) = [r for r in aws_inputs(rendering, "aws:iam/role:Role") if r.name == "karpenter-node"]
    (queue,) = aws_inputs(rendering, "aws:sqs/queue:Queue")
    return {
        "partition": mocks.partition(region)[0], "region": region, "account": mocks.FAKE_ACCOUNT, "cluster": rendering.config.cluster.name,
        "node_role": role_arn(node_role, region),
        "queue": mocks._fake_arn("aws:sqs/queue:Queue", physical(queue), region),
        "key": mocks.FAKE_STATE["aws:kms/key:Key"]("secrets", {}, region)["arn"],
    }  # fmt: skip


def in_region(region: str) -> dict[str, Any]:
    document = minimal_document()
    document["config"]["aws:region"] = region
    return document


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_the_controller_policies_are_karpenters_reference_statement_for_statement(stack: str) -> None:
    rendering = rendered_stack(stack)
    region = stack_document(stack)["config"]["aws:region"]
    assert drift_from_reference(controller_documents(rendering), reference_values(rendering, region)) == []


@pytest.mark.parametrize("region", ["eu-west-1", "cn-north-1"])
def test_the_controller_policies_follow_the_stacks_region_and_partition(region: str) -> None:
    rendering = render_document(in_region(region))
    assert drift_from_reference(controller_documents(rendering), reference_values(rendering, region)) == []


def _drop(statement: dict[str, Any], action: str) -> None:
    statement["Action"] = [a for a in statement["Action"] if a != action]


@pytest.mark.parametrize(
    "sid, mutate",
    [
        ("AllowScopedEC2InstanceActionsWithTags", lambda s: _drop(s, "ec2:CreateFleet")),
        ("AllowRegionalReadActions", lambda s: _drop(s, "ec2:DescribeSpotPriceHistory")),
        ("AllowScopedDeletion", lambda s: s.update(Resource="*")),
    ],
    ids=["no-create-fleet-with-tags", "no-spot-price-history", "deletion-anywhere"],
)
def test_a_policy_drifting_from_the_reference_is_caught_statement_by_statement(sid: str, mutate: Any) -> None:
    rendering = rendered_stack("prod")
    documents = json.loads(json.dumps(controller_documents(rendering)))
    (statement,) = [s for d in documents.values() for s in d["Statement"] if s["Sid"] == sid]
    mutate(statement)
    (drift,) = drift_from_reference(documents, reference_values(rendering, "us-west-2"))
    assert f" {sid}: the reference has " in drift


def test_the_controller_gets_its_role_through_pod_identity_and_the_nodes_join_through_an_access_entry() -> None:
    rendering = rendered_stack("prod")
    (association,) = [r for r in aws_inputs(rendering, "aws:eks/podIdentityAssociation:PodIdentityAssociation") if r.name == "karpenter"]
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == ("kube-system", "karpenter")
    (controller_role,) = [r for r in aws_inputs(rendering, "aws:iam/role:Role") if r.name == "karpenter"]
    assert association.inputs["roleArn"] == role_arn(controller_role), "the role the reference policies are attached to"
    entries = [r for r in aws_inputs(rendering, "aws:eks/accessEntry:AccessEntry") if r.inputs["type"] == "EC2_LINUX"]
    assert [e.name for e in entries] == ["karpenter-node"]
    associations = {r.inputs["principalArn"] for r in aws_inputs(rendering, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}
    assert entries[0].inputs["principalArn"] not in associations, "an EC2_LINUX entry takes no access policy"
    attached = {r.inputs["policyArn"].rpartition("/")[2] for r in aws_inputs(rendering, "aws:iam/rolePolicyAttachment:RolePolicyAttachment") if r.name.startswith("karpenter-node-")}
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryPullOnly", "AmazonSSMManagedInstanceCore"}


def test_the_interruption_queue_takes_only_its_rules_and_the_controller_reads_it() -> None:
    rendering = rendered_stack("prod")
    (queue,) = aws_inputs(rendering, "aws:sqs/queue:Queue")
    assert queue.inputs["messageRetentionSeconds"] == 300 and queue.inputs["sqsManagedSseEnabled"] is True
    rules = {r.name: r for r in aws_inputs(rendering, "aws:cloudwatch/eventRule:EventRule")}
    patterns = [json.loads(r.inputs["eventPattern"]) for r in rules.values()]
    # As Karpenter's reference (its getting-started CloudFormation, v1.14.1) has them, written out here.
    assert sorted((p["source"][0], p["detail-type"][0]) for p in patterns) == [
        ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
        ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
        ("aws.ec2", "EC2 Instance State-change Notification"),
        ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
        ("aws.health", "AWS Health Event"),
    ]
    targets = aws_inputs(rendering, "aws:cloudwatch/eventTarget:EventTarget")
    queue_arn = mocks._fake_arn("aws:sqs/queue:Queue", physical(queue))
    assert len(targets) == len(rules) and all(t.inputs["arn"] == queue_arn for t in targets)
    assert {t.inputs["rule"] for t in targets} == {mocks.FAKE_STATE["aws:cloudwatch/eventRule:EventRule"](n, r.inputs)["name"] for n, r in rules.items()}
    (policy,) = aws_inputs(rendering, "aws:sqs/queuePolicy:QueuePolicy")
    allow, others, plain_http = json.loads(policy.inputs["policy"])["Statement"]
    rule_arns = sorted(mocks._fake_arn("aws:cloudwatch/eventRule:EventRule", physical(r)) for r in rules.values())
    assert allow["Principal"] == {"Service": "events.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert sorted(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == rule_arns
    # Every other sender, an identity of the account allowed sqs:SendMessage by its own policy included, is denied.
    assert (others["Effect"], others["Principal"], others["Action"]) == ("Deny", "*", "sqs:SendMessage")
    assert sorted(others["Condition"]["ArnNotEquals"]["aws:SourceArn"]) == rule_arns
    assert plain_http["Effect"] == "Deny" and plain_http["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_no_cluster_autoscaler_remains(stack: str) -> None:
    rendering = rendered_stack(stack)
    names = {r.name for r in rendering.resources}
    assert not {n for n in names if "autoscaler" in n}
    assert not resources_of(rendering, "aws:autoscaling/")
    assert [g.name for g in aws_inputs(rendering, "aws:eks/nodeGroup:NodeGroup")] == ["system"]
    (system,) = aws_inputs(rendering, "aws:eks/nodeGroup:NodeGroup")
    assert system.ignore_changes == (), "nothing scales the system group behind Pulumi's back any more"
    # Nor does any object still speak to it: no annotation, tag or flag names cluster-autoscaler.
    assert "cluster-autoscaler" not in json.dumps(rendering.manifests()) + json.dumps([r.inputs for r in rendering.resources])


def test_an_existing_clusters_model_pods_keep_cluster_autoscaler_from_repacking_them() -> None:
    """There its nodes may be cluster-autoscaler's, which would evict a serving pod to empty a node."""
    document = yaml.safe_load((Path(__file__).parent / "data" / "existing-cluster.yaml").read_text())
    (deployment, *_) = [o for o in render_document(document).manifests() if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
