"""The cluster layer: pure builders (network, IAM, tags, cost, Helm values) and the wiring under mocks."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Optional

import pulumi
import pytest
import yaml

from tests.conftest import (
    ADMIN,
    COMMITTED_STACKS,
    document_plan,
    minimal_document,
    render_document,
    rendered_stack,
    resources_of,
    stack_document,
)
from tools import mocks, offerings, render, schemas
from vllm_platform import catalog, contract, pins
from vllm_platform.aws import eks as cluster
from vllm_platform.aws import iam as aws_policies
from vllm_platform.aws import network
from vllm_platform.aws import nodes as node_pools
from vllm_platform.catalog import INSTANCE_TYPES, PRICE_SOURCE
from vllm_platform.config.pools import GpuNodePool
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.loader import stack_config
from vllm_platform.config.platform import PlatformConfig
from vllm_platform.k8s import cluster_addons, karpenter
from vllm_platform.plan import notes
from vllm_platform.plan.plans import PoolPlan
from vllm_platform.plan.resolve import pool_plan

EXISTING_EXAMPLE = Path(__file__).parent / "data" / "existing-cluster.yaml"
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+", re.ASCII)
CREATED_STACKS = [s for s in COMMITTED_STACKS if "existing" not in render.stack_file(s).read_text()]
CLUSTER_OUTPUTS = {
    "clusterName", "clusterEndpoint", "kubeconfig", "oidcIssuerUrl", "podIdentity", "nodeRoleArn", "gpuNodeRoleArn",
    "vpcId", "privateSubnetIds", "publicSubnetIds", "gpuPools", "maxHourlyGpuCostUsd", "idleHourlyGpuCostUsd",
    "gpuPriceSource", "modelCacheBucket", "imageRegistry",
}  # fmt: skip
POOL_KEYS = {
    "instanceTypes", "gpuModel", "gpusPerNode", "capacityType", "capacityTypes", "capacityReservations", "minNodes",
    "maxNodes", "maxGpus", "maxHourlyCostUsd", "warmNodes", "idleNodes", "idleHourlyCostUsd",
}  # fmt: skip


def pool(**fields: Any) -> PoolPlan:
    """A pool's plan, as its models would leave it: none on it."""
    pool = GpuNodePool.model_validate({"name": "g5", "instanceTypes": ["g5.xlarge"], "maxSize": 2, **fields})
    return pool_plan(pool, [], {})


def one(rendering: render.Rendering, type_: str, name: str) -> mocks.RecordedResource:
    (record,) = [r for r in rendering.resources if r.type == type_ and r.name == name]
    return record


def of_type(rendering: render.Rendering, type_: str) -> list[mocks.RecordedResource]:
    return [r for r in rendering.resources if r.type == type_]


def cluster_document(**cluster_keys: Any) -> dict[str, Any]:
    document = minimal_document()
    document["config"]["vllm-platform:cluster"].update(cluster_keys)
    return document


def document_config(document: dict[str, Any]) -> PlatformConfig:
    """A stack document's config, validated as the program validates it."""
    return stack_config(document).platform()


# --- pure builders ---------------------------------------------------------------------------


@pytest.mark.parametrize("cidr, zones", [("10.0.0.0/16", 2), ("10.40.0.0/16", 6), ("172.16.0.0/20", 3)])
def test_subnets_fit_the_vpc_without_overlap(cidr: str, zones: int) -> None:
    private, public = network.subnet_cidrs(cidr, zones)
    assert len(private) == len(public) == zones
    blocks = [ipaddress.ip_network(c) for c in private + public]
    assert all(b.subnet_of(ipaddress.ip_network(cidr)) for b in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    # Pods take VPC addresses: private subnets are the large ones.
    assert blocks[0].num_addresses == 8 * blocks[-1].num_addresses


def test_subnet_tags_select_load_balancer_subnets() -> None:
    public = network.subnet_tags("llm-dev", True, "us-west-2a")
    private = network.subnet_tags("llm-dev", False, "us-west-2a")
    assert public["kubernetes.io/role/elb"] == "1" and "kubernetes.io/role/internal-elb" not in public
    assert private["kubernetes.io/role/internal-elb"] == "1" and "kubernetes.io/role/elb" not in private
    assert public["kubernetes.io/cluster/llm-dev"] == private["kubernetes.io/cluster/llm-dev"] == "shared"


def test_trust_policies_name_one_service() -> None:
    pods = aws_policies.service_trust_policy(aws_policies.POD_IDENTITY_SERVICE)["Statement"]
    assert pods == [
        {"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}
    ]
    ec2 = aws_policies.service_trust_policy(aws_policies.EC2_SERVICE)["Statement"]
    assert ec2[0]["Action"] == ["sts:AssumeRole"]


def test_encryption_policy_is_limited_to_the_key() -> None:
    (statement,) = aws_policies.secrets_encryption_policy("arn:aws:kms:us-west-2:1:key/k")["Statement"]
    assert statement["Resource"] == "arn:aws:kms:us-west-2:1:key/k"
    assert set(statement["Action"]) == {"kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"}


def test_gpu_nodes_carry_the_model_contract() -> None:
    labels = karpenter.gpu_node_labels(pool(name="g5"))
    assert labels[contract.GPU_POOL_LABEL] == "g5" and labels["node-type"] == "gpu"
    assert contract.GPU_TAINT.manifest() == {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}


def test_pool_cost_is_the_dearest_type_at_max_size() -> None:
    summary = node_pools.pool_summary(pool(instanceTypes=["g5.xlarge", "g5.2xlarge"], maxSize=3))
    assert summary["maxHourlyCostUsd"] == round(3 * INSTANCE_TYPES["g5.2xlarge"].on_demand_usd_per_hour, 2)
    assert summary["maxGpus"] == 3 and summary["gpuModel"] == "A10G" and summary["gpusPerNode"] == 1
    assert set(summary) == POOL_KEYS


def test_total_cost_sums_the_pools() -> None:
    plan = document_plan(stack_document("prod"))
    pools = plan.config.cluster.pools
    expected = sum(
        max(INSTANCE_TYPES[t].on_demand_usd_per_hour for t in p.instance_types) * p.max_size for p in pools.values()
    )
    assert node_pools.hourly_gpu_cost_usd(plan, "maxHourlyCostUsd") == pytest.approx(expected, abs=0.01)


def test_efa_interfaces_follow_the_flag_and_the_type() -> None:
    assert pool(name="p4d", instanceTypes=["p4d.24xlarge"]).efa_interfaces == 0
    assert pool(name="p4d", instanceTypes=["p4d.24xlarge"], efa=True).efa_interfaces == 4


# A made-up region for the zone choice's own logic: g5 in three zones, the P types in fewer, p4de in none.
MADE_UP_OFFERINGS = {
    "us-west-2a": {f"g5.{size}" for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")},
    "us-west-2b": {"g5.xlarge", "g5.2xlarge", "g5.4xlarge", "g5.8xlarge", "g5.12xlarge", "g5.48xlarge", "p4d.24xlarge"},
    "us-west-2c": {"g5.xlarge", "g5.2xlarge", "g5.12xlarge", "g5.48xlarge", "p4d.24xlarge", "p5.48xlarge"},
    "us-west-2d": {"p5.48xlarge"},
}
ZONES = sorted(MADE_UP_OFFERINGS)


@pytest.mark.parametrize(
    "pools, count, zones",
    [
        ([pool(name="g5")], 2, ["us-west-2a", "us-west-2b"]),
        ([pool(name="g5"), pool(name="p4d", instanceTypes=["p4d.24xlarge"])], 2, ["us-west-2b", "us-west-2c"]),
        ([pool(name="g5"), pool(name="p4d", instanceTypes=["p4d.24xlarge"])], 3, ["us-west-2a", "us-west-2b", "us-west-2c"]),
        # Every pool first gets a zone of its own, even one no other pool fits.
        ([pool(name="g5", instanceTypes=["g5.16xlarge"]), pool(name="p5", instanceTypes=["p5.48xlarge"])], 2, ["us-west-2a", "us-west-2c"]),
        ([pool(name="g5", instanceTypes=["g5.16xlarge"]), pool(name="p5", instanceTypes=["p5.48xlarge"], maxSize=1)], 3, ["us-west-2a", "us-west-2c", "us-west-2d"]),
        ([], 2, ["us-west-2a", "us-west-2b"]),
    ],
)
def test_zones_are_chosen_where_the_pools_instance_types_are_offered(pools: list[GpuNodePool], count: int, zones: list[str]) -> None:
    chosen = network.choose_zones(ZONES, count, pools, MADE_UP_OFFERINGS)
    assert chosen == zones
    assert network.zone_problems(pools, chosen, MADE_UP_OFFERINGS, "") == []


def test_a_pool_fits_only_zones_offering_all_its_types() -> None:
    mixed = pool(instanceTypes=["g5.xlarge", "g5.16xlarge"])
    assert network.fitting_zones(mixed, ZONES, MADE_UP_OFFERINGS) == ["us-west-2a"]
    (problem,) = network.zone_problems([mixed], ["us-west-2b", "us-west-2c"], MADE_UP_OFFERINGS, "Do this.")
    assert problem == (
        "cluster.gpuNodePools[g5]: no availability zone of the cluster (us-west-2b, us-west-2c) offers g5.xlarge, "
        "g5.16xlarge; zones that do: us-west-2a. Do this."
    )


def test_kubeconfig_authenticates_with_aws_eks_get_token() -> None:
    config = cluster.kubeconfig("llm-dev", "https://x.eks.amazonaws.com", "Q0E=", "us-west-2")
    (user,) = config["users"]
    exec_ = user["user"]["exec"]
    assert exec_["command"] == "aws"
    assert exec_["args"] == ["eks", "get-token", "--cluster-name", "llm-dev", "--region", "us-west-2", "--output", "json"]
    assert config["clusters"][0]["cluster"]["server"] == "https://x.eks.amazonaws.com"
    assert "token" not in json.dumps(user["user"]).replace("get-token", "")


def test_principal_names_are_stable_and_unique() -> None:
    assert cluster.principal_slug("arn:aws:iam::123456789012:role/ci/deployer") == "123456789012-role/ci/deployer"
    lookalikes = [
        "arn:aws:iam::111111111111:role/deploy",
        "arn:aws:iam::222222222222:role/deploy",
        "arn:aws:iam::111111111111:role/ci-x",
        "arn:aws:iam::111111111111:role/ci/x",
        "arn:aws:iam::111111111111:user/ci/x",
    ]
    assert len({cluster.principal_slug(arn) for arn in lookalikes}) == len(lookalikes)


def test_lookalike_principals_get_an_access_entry_each() -> None:
    admins = ["arn:aws:iam::111111111111:role/deploy", "arn:aws:iam::222222222222:role/deploy", "arn:aws:iam::111111111111:role/ci-x"]
    viewers = ["arn:aws:iam::111111111111:role/ci/x"]
    rendering = render_document(cluster_document(adminPrincipalArns=admins, viewerPrincipalArns=viewers))
    entries = [e for e in of_type(rendering, "aws:eks/accessEntry:AccessEntry") if e.inputs["type"] == "STANDARD"]
    assert sorted(e.inputs["principalArn"] for e in entries) == sorted(admins + viewers)
    assert len({e.name for e in entries}) == len(entries)


def test_device_plugin_runs_only_on_gpu_nodes_and_tolerates_their_taint() -> None:
    values = cluster_addons.device_plugin_values()
    assert values["nodeSelector"] == {"node-type": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]


def test_gp3_storage_class_is_the_default_and_valid() -> None:
    manifest = cluster_addons.gp3_storage_class()
    assert manifest["metadata"]["name"] == "gp3"
    assert manifest["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert manifest["parameters"]["type"] == "gp3" and manifest["parameters"]["encrypted"] == "true"
    assert schemas.validate_built_in(manifest, "1.34") == []


@pytest.mark.parametrize(
    "cluster_keys, message",
    [
        ({"adminPrincipalArns": ["alice"]}, "cluster.adminPrincipalArns: 'alice' is not an IAM user or role ARN"),
        ({"adminPrincipalArns": []}, "cluster: adminPrincipalArns is empty: list the IAM roles or users that run `pulumi up`"),
        ({"viewerPrincipalArns": [ADMIN]}, f"{ADMIN} is in both adminPrincipalArns and viewerPrincipalArns"),
        ({"adminPrincipalArns": [ADMIN, ADMIN]}, f"cluster: {ADMIN} is listed more than once in adminPrincipalArns"),
        ({"systemNodes": {"rootVolumeGiB": 10}}, "cluster.systemNodes.rootVolumeGiB: Input should be greater than or equal to 20, not the number 10"),
        ({"vpc": {"id": "vpc-0123456789abcdef0", "privateSubnetIds": ["subnet-0123456789abcdefa"]}}, "needs privateSubnetIds in at least two availability zones"),
        (
            {"endpoint": {"privateAccess": False, "publicAccessCidrs": ["203.0.113.0/24"]}},
            "cluster.endpoint: privateAccess false with publicAccessCidrs 203.0.113.0/24: nodes in the private subnets "
            "reach the public endpoint from the NAT gateways' addresses, which the list does not admit",
        ),
        ({"endpoint": {"privateAccess": False}}, "cluster.endpoint: privateAccess false with no publicAccessCidrs"),
    ],
)
def test_cluster_keys_are_validated(cluster_keys: dict[str, Any], message: str) -> None:
    problems = cluster_problems(**cluster_keys)
    assert any(message in p for p in problems), problems


def cluster_problems(**cluster_keys: Any) -> list[str]:
    with pytest.raises(ConfigError) as error:
        document_config(cluster_document(**cluster_keys))
    return error.value.problems


def test_the_system_nodes_hold_one_karpenter_controller_each() -> None:
    (problem,) = cluster_problems(systemNodes={"minSize": 1, "maxSize": 3})
    assert problem == (
        "cluster.systemNodes.minSize: 1 is below 2: Karpenter's 2 controller replicas run one to a system node, "
        "never on a GPU node it launched"
    ), problem
    accepted = document_config(cluster_document(systemNodes={"minSize": 2, "maxSize": 3}))
    assert accepted.cluster.system_nodes.min_size == 2


def test_a_public_only_endpoint_must_admit_the_nodes() -> None:
    endpoint = {"privateAccess": False, "publicAccessCidrs": ["0.0.0.0/0"]}
    assert document_config(cluster_document(endpoint=endpoint)).cluster.endpoint.private_access is False


@pytest.mark.parametrize("version", ["1.31", "1.37"])
def test_a_kubernetes_minor_karpenter_does_not_support_is_refused(version: str) -> None:
    (problem,) = cluster_problems(kubernetesVersion=version)
    supported = ", ".join(pins.SUPPORTED_KUBERNETES_VERSIONS)
    assert problem.startswith(f"cluster.kubernetesVersion: '{version}' is not a Kubernetes minor version")
    assert f"supports: {supported} (" in problem and supported.startswith("1.32, ")


@pytest.mark.parametrize("support_type", ["STANDARD", "EXTENDED"])
def test_the_upgrade_policy_follows_the_config(support_type: str) -> None:
    rendering = render_document(cluster_document(supportType=support_type))
    assert one(rendering, "aws:eks/cluster:Cluster", "eks").inputs["upgradePolicy"] == {"supportType": support_type}
    assert document_config(cluster_document()).cluster.support_type == "STANDARD"
    assert "cluster.supportType: Input should be 'STANDARD' or 'EXTENDED'" in cluster_problems(supportType="extended")


# --- wiring under mocks ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_the_system_launch_template_requires_imdsv2_and_an_encrypted_gp3_root(stack: str) -> None:
    rendering = rendered_stack(stack)
    templates = {r.name: r.inputs for r in of_type(rendering, "aws:ec2/launchTemplate:LaunchTemplate")}
    sizes = {"system": rendering.config.cluster.system_nodes.root_volume_gib}
    assert set(templates) == set(sizes)
    for name, inputs in templates.items():
        assert inputs["metadataOptions"]["httpTokens"] == "required"
        assert inputs["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert "imageId" not in inputs, "EKS picks the AMI of the node group's amiType"
        (root,) = inputs["blockDeviceMappings"]
        assert root["ebs"] | {"volumeSize": sizes[name]} == root["ebs"]
        assert root["ebs"]["volumeType"] == "gp3" and root["ebs"]["encrypted"] == "true"
    groups = {r.name: r.inputs for r in of_type(rendering, "aws:eks/nodeGroup:NodeGroup")}
    for name, inputs in groups.items():
        assert inputs["launchTemplate"] == {"id": f"{name}-id", "version": "1"}


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_the_kms_key_encrypts_secrets_and_rotates(stack: str) -> None:
    rendering = rendered_stack(stack)
    key = one(rendering, "aws:kms/key:Key", "secrets")
    assert key.inputs["enableKeyRotation"] is True
    eks = one(rendering, "aws:eks/cluster:Cluster", "eks").inputs
    key_arn = mocks.FAKE_STATE["aws:kms/key:Key"]("secrets", {})["arn"]
    assert eks["encryptionConfig"] == {"provider": {"keyArn": key_arn}, "resources": ["secrets"]}
    grant = json.loads(one(rendering, "aws:iam/rolePolicy:RolePolicy", "cluster-secrets-encryption").inputs["policy"])
    assert grant["Statement"][0]["Resource"] == key_arn


def test_the_endpoint_is_private_unless_the_config_opens_it() -> None:
    vpc_config = one(render_document(cluster_document()), "aws:eks/cluster:Cluster", "eks").inputs["vpcConfig"]
    assert vpc_config["endpointPrivateAccess"] is True and vpc_config["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in vpc_config


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_control_plane_uses_access_entries_logs_and_configured_endpoint(stack: str) -> None:
    rendering = rendered_stack(stack)
    inputs = one(rendering, "aws:eks/cluster:Cluster", "eks").inputs
    cfg = rendering.config.cluster
    assert inputs["name"] == cfg.name and inputs["version"] == cfg.kubernetes_version
    assert inputs["accessConfig"] == {"authenticationMode": "API", "bootstrapClusterCreatorAdminPermissions": False}
    assert inputs["enabledClusterLogTypes"] == ["api", "audit", "authenticator"]
    vpc_config = inputs["vpcConfig"]
    assert vpc_config["endpointPrivateAccess"] is cfg.endpoint.private_access
    assert vpc_config.get("publicAccessCidrs", []) == cfg.endpoint.public_access_cidrs
    entries = {r.inputs["principalArn"] for r in of_type(rendering, "aws:eks/accessEntry:AccessEntry") if r.inputs["type"] == "STANDARD"}
    grants = {
        r.inputs["principalArn"]: r for r in of_type(rendering, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    }
    assert entries == set(grants) == {*cfg.admin_principal_arns, *cfg.viewer_principal_arns}
    policy = "arn:aws:eks::aws:cluster-access-policy/"
    for arn in cfg.admin_principal_arns:
        assert grants[arn].inputs["policyArn"] == policy + "AmazonEKSClusterAdminPolicy"
    for arn in cfg.viewer_principal_arns:
        assert grants[arn].inputs["policyArn"] == policy + "AmazonEKSAdminViewPolicy", "previews read, Secrets included"
    assert all(g.inputs["accessScope"] == {"type": "cluster"} for g in grants.values())
    (provider,) = of_type(rendering, "pulumi:providers:kubernetes")
    for grant in grants.values():
        assert f"aws:eks/accessPolicyAssociation:AccessPolicyAssociation::{grant.name}" in provider.dependencies


def test_access_follows_the_config_not_whoever_runs_pulumi() -> None:
    admins = [ADMIN, "arn:aws:iam::123456789012:role/platform-admins"]
    document = cluster_document(adminPrincipalArns=admins, viewerPrincipalArns=["arn:aws:iam::123456789012:role/preview"])
    by_deployer = render_document(document)
    by_preview = render.render(stack_config(document), "test", caller_arn="arn:aws:iam::123456789012:role/preview")
    names = {r.name for r in of_type(by_deployer, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}
    assert names == {"admin-123456789012-role/deploy", "admin-123456789012-role/platform-admins", "viewer-123456789012-role/preview"}
    assert names == {r.name for r in of_type(by_preview, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}


def test_a_caller_the_cluster_does_not_admit_stops_the_run() -> None:
    stranger = "arn:aws:iam::123456789012:user/someone-else"
    with pytest.raises(pulumi.RunError, match=f"cluster.adminPrincipalArns: {stranger} runs this update but has no access"):
        render.render(stack_config(cluster_document()), "test", caller_arn=stranger)


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_node_groups_are_named_by_prefix_so_a_replacement_can_coexist(stack: str) -> None:
    """The instance type, subnets and the launch template force a new group, created before the old goes."""
    for group in of_type(rendered_stack(stack), "aws:eks/nodeGroup:NodeGroup"):
        assert "nodeGroupName" not in group.inputs, group.name
        assert group.inputs["nodeGroupNamePrefix"] == f"{group.name}-"
    assert all("name" not in t.inputs for t in of_type(rendered_stack(stack), "aws:ec2/launchTemplate:LaunchTemplate"))


@pytest.mark.parametrize("version", ["1.33", "1.35"])
def test_a_kubernetes_upgrade_moves_the_nodes_and_the_addons_too(version: str) -> None:
    rendering = render_document(cluster_document(kubernetesVersion=version))
    groups = of_type(rendering, "aws:eks/nodeGroup:NodeGroup")
    assert groups and all(g.inputs["version"] == version for g in groups)
    addons = of_type(rendering, "aws:eks/addon:Addon")
    for addon in addons:
        name = addon.inputs["addonName"]
        assert addon.inputs["addonVersion"] == mocks.fake_addon_version(name, version, most_recent=False), name
    assert one(rendering, "aws:eks/addon:Addon", "kube-proxy").inputs["addonVersion"].startswith(f"v{version}.")


@pytest.mark.parametrize(
    "has_default, wording",
    [(True, None), (False, "empty result"), (False, "Empty result")],
    ids=["a default", "no default", "no default, capitalized"],
)
def test_an_addon_gets_awss_default_version_or_else_the_most_recent(
    has_default: bool, wording: Optional[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A community add-on (metrics-server) may have no version marked default for a minor: the lookup
    answers "empty result" then (in whatever case), and the most recent version for that minor is used instead."""
    if not has_default:
        monkeypatch.setattr(mocks, "ADDONS_WITHOUT_DEFAULT", frozenset({"metrics-server"}))
        monkeypatch.setattr(mocks, "NO_DEFAULT_WORDING", wording)
    rendering = render_document(cluster_document())
    installed = one(rendering, "aws:eks/addon:Addon", "metrics-server").inputs["addonVersion"]
    assert installed == mocks.fake_addon_version("metrics-server", "1.34", most_recent=not has_default)
    lookups = [c for c in rendering.calls if c == "aws:eks/getAddonVersion:getAddonVersion"]
    assert len(lookups) == len(of_type(rendering, "aws:eks/addon:Addon")) + (0 if has_default else 1)
    # Every other add-on keeps its default either way.
    assert one(rendering, "aws:eks/addon:Addon", "coredns").inputs["addonVersion"] == mocks.fake_addon_version("coredns", "1.34", False)


def test_any_other_addon_lookup_failure_still_stops_the_preview(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: Any, args: dict[str, Any]) -> dict[str, Any]:
        raise mocks.ProviderError("operation error EKS: DescribeAddonVersions, AccessDeniedException")

    monkeypatch.setattr(mocks.FakeAws, "addon_version", refused)
    with pytest.raises(Exception, match="AccessDeniedException"):
        render_document(cluster_document())


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_protect_follows_the_config(stack: str) -> None:
    rendering = rendered_stack(stack)
    protected = {(r.type, r.name) for r in rendering.resources if r.protect}
    expected = {("aws:eks/cluster:Cluster", "eks"), ("aws:kms/key:Key", "secrets"), ("aws:ec2/vpc:Vpc", "vpc")}
    assert protected == (expected if rendering.config.cluster.protect else set())
    eks = one(rendering, "aws:eks/cluster:Cluster", "eks").inputs
    assert eks["deletionProtection"] is rendering.config.cluster.protect


def test_prod_is_protected() -> None:
    assert rendered_stack("prod").config.cluster.protect


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_plan_holds_the_aws_resources_of_the_cluster(stack: str) -> None:
    rendering = rendered_stack(stack)
    plan = rendering.plan_document()
    count: dict[str, int] = {}
    for entry in plan["resources"]:
        count[entry["type"]] = count.get(entry["type"], 0) + 1
    cfg = rendering.config.cluster
    zones = cfg.vpc.zone_count
    assert count["aws:ec2/vpc:Vpc"] == 1 and count["aws:ec2/internetGateway:InternetGateway"] == 1
    assert count["aws:ec2/subnet:Subnet"] == 2 * zones
    assert count["aws:ec2/natGateway:NatGateway"] == (zones if cfg.vpc.nat_gateways == "perAz" else 1)
    assert count["aws:eks/cluster:Cluster"] == 1 and count["aws:kms/key:Key"] == 1
    (s3,) = [e["inputs"] for e in plan["resources"] if e["type"] == "aws:ec2/vpcEndpoint:VpcEndpoint"]
    assert (s3["serviceName"], s3["vpcEndpointType"]) == ("com.amazonaws.us-west-2.s3", "Gateway")
    private_routes = {f"{e['name']}-id" for e in plan["resources"] if e["type"] == "aws:ec2/routeTable:RouteTable" and e["name"].startswith("private-")}
    assert set(s3["routeTableIds"]) == private_routes and len(private_routes) == zones
    assert count["aws:eks/nodeGroup:NodeGroup"] == 1, "the system group; Karpenter launches the GPU nodes"
    identities = {
        f"{e['inputs']['namespace']}/{e['inputs']['serviceAccount']}"
        for e in plan["resources"]
        if e["type"] == "aws:eks/podIdentityAssociation:PodIdentityAssociation" and e["name"] != "alertmanager-sns"
    }
    assert identities == {"kube-system/karpenter", "kube-system/ebs-csi-controller-sa"} | cache_identities(rendering) | load_balancer_identity(rendering)
    addons = {e["inputs"]["addonName"] for e in plan["resources"] if e["type"] == "aws:eks/addon:Addon"}
    assert addons == {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "aws-ebs-csi-driver", "metrics-server"}
    cni = one(rendering, "aws:eks/addon:Addon", "vpc-cni").inputs
    assert json.loads(cni["configurationValues"]) == {"enableNetworkPolicy": "true"}, "NetworkPolicies are enforced"
    ebs = one(rendering, "aws:eks/addon:Addon", "aws-ebs-csi-driver")
    assert "aws:eks/podIdentityAssociation:PodIdentityAssociation::ebs-csi-driver" in ebs.dependencies


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_helm_releases_are_pinned_and_go_through_the_cluster_provider(stack: str) -> None:
    rendering = rendered_stack(stack)
    (provider,) = of_type(rendering, "pulumi:providers:kubernetes")
    releases = {r.name: r for r in resources_of(rendering, "kubernetes:helm.sh/v3:Release")}
    for chart in (pins.NVIDIA_DEVICE_PLUGIN, pins.KARPENTER, pins.KARPENTER_CRD):
        release = releases[chart.release]
        assert EXACT_VERSION.fullmatch(release.inputs["version"])
        assert release.inputs["name"] == chart.release and release.inputs["namespace"] == "kube-system"
        if chart.repository.startswith("oci://"):
            assert release.inputs["chart"] == f"{chart.repository}/{chart.chart}" and "repositoryOpts" not in release.inputs
        else:
            assert release.inputs["repositoryOpts"]["repo"] == chart.repository
        assert release.provider.split("::")[-2] == provider.name
    assert "cluster-autoscaler" not in releases
    plugin = releases["nvidia-device-plugin"].inputs["values"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in plugin["tolerations"]
    assert plugin["nodeSelector"] == {"node-type": "gpu"}
    for resource in rendering.resources:
        if resource.type.startswith("kubernetes:"):
            assert resource.provider and resource.provider.split("::")[-2] == provider.name, resource.name


def test_workloads_wait_for_the_cluster_and_the_node_pools_objects_but_not_for_gpu_capacity() -> None:
    """A NodePool is an object the API server stores at once: waiting for it is not waiting for a node."""
    rendering = rendered_stack("prod")
    namespace = one(rendering, "kubernetes:core/v1:Namespace", "inference")
    (observability,) = of_type(rendering, "vllm-platform:index:Observability")
    for waiting in (namespace, observability):
        for needed in ("aws:eks/nodeGroup:NodeGroup::system", "kubernetes:helm.sh/v3:Release::karpenter",
                       "kubernetes:karpenter.sh/v1:NodePool::gpu-p4d", "kubernetes:storage.k8s.io/v1:StorageClass::gp3",
                       "aws:eks/addon:Addon::coredns"):  # fmt: skip
            assert needed in waiting.dependencies
    # A p4d that EC2 cannot supply holds only the pods waiting for it: no GPU node is a resource of the stack.
    assert [g.name for g in of_type(rendering, "aws:eks/nodeGroup:NodeGroup")] == ["system"]


def test_a_model_from_s3_reads_its_prefix_through_its_own_service_account() -> None:
    document = cluster_document()
    document["config"]["vllm-platform:models"][0]["model"] = "s3://acme-models/llama-3.1-8b-instruct/"
    rendering = render_document(document)
    association = one(rendering, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "model-llama-8b").inputs
    assert (association["namespace"], association["serviceAccount"]) == ("inference", "llama-8b")
    policy = json.loads(one(rendering, "aws:iam/rolePolicy:RolePolicy", "model-llama-8b").inputs["policy"])
    assert policy == aws_policies.model_weights_policy("aws", "acme-models", "llama-3.1-8b-instruct/")
    assert policy["Statement"][0]["Resource"] == "arn:aws:s3:::acme-models/llama-3.1-8b-instruct/*"
    assert policy["Statement"][1]["Condition"] == {"StringLike": {"s3:prefix": ["llama-3.1-8b-instruct/*"]}}
    assert "inference/llama-8b" in rendering.outputs["podIdentity"]["roleArns"]
    namespace = one(rendering, "kubernetes:core/v1:Namespace", "inference")
    assert "aws:eks/podIdentityAssociation:PodIdentityAssociation::model-llama-8b" in namespace.dependencies


def cache_identities(rendering: render.Rendering) -> set[str]:
    """The service accounts of the model cache: each streamed model's, and each staging Job's."""
    found = set()
    for model in rendering.plan.models:
        if model.weights.streams:
            found.add(f"{model.namespace}/{model.name}")
        if model.weights.staging:
            found.add(f"{model.namespace}/{model.weights.staging.service_account}")
    return found


def test_hugging_face_models_without_the_cache_get_no_aws_identity() -> None:
    def model_identities(**cache: Any) -> list[str]:
        """Sorted: resources register as their inputs resolve, in no fixed order."""
        document = minimal_document(modelCache=cache)
        document["config"]["vllm-platform:models"][0]["revision"] = "0e9e39f249a16976918f6564b8830bc894c89659"
        rendering = render_document(document)
        return sorted(r.name for r in of_type(rendering, "aws:eks/podIdentityAssociation:PodIdentityAssociation") if "llama" in r.name)

    assert model_identities(enabled=False) == []
    assert model_identities(enabled=True) == ["model-llama-8b", "stage-llama-8b"]


def in_region(region: str, **cluster_keys: Any) -> dict[str, Any]:
    document = cluster_document(**cluster_keys)
    document["config"]["aws:region"] = region
    return document


P4D_POOL = {"name": "p4d", "instanceTypes": ["p4d.24xlarge"], "maxSize": 2, "rootVolumeGiB": 300}


@pytest.mark.parametrize(
    "cluster_keys, message",
    [
        (
            {"vpc": {"id": "vpc-0123456789abcdef0", "privateSubnetIds": ["subnet-0123456789abcdefa", "subnet-0123456789abcdefc"]}},
            "cluster.gpuNodePools[p4d]: no availability zone of the cluster (eu-west-1a, eu-west-1c) offers p4d.24xlarge; "
            "zones that do: eu-west-1b. Add private subnets in one of them to cluster.vpc.privateSubnetIds",
        ),
        (
            {"vpc": {"availabilityZones": 2}, "gpuNodePools": [{**P4D_POOL, "instanceTypes": ["p4de.24xlarge"]}]},
            "cluster.gpuNodePools[p4d]: no availability zone of the cluster (eu-west-1a, eu-west-1b) offers p4de.24xlarge; "
            "no zone of region eu-west-1 does. Use other instanceTypes, or another region",
        ),
        (
            {"vpc": {"zones": ["eu-west-1a", "eu-west-1c"]}},
            "cluster.gpuNodePools[p4d]: no availability zone of the cluster (eu-west-1a, eu-west-1c) offers p4d.24xlarge; "
            "zones that do: eu-west-1b. Name one of them in cluster.vpc.zones",
        ),
        ({"vpc": {"zones": ["eu-west-1b", "eu-west-9z"]}}, "cluster.vpc.zones: eu-west-9z not zones of the region"),
    ],
    ids=["existing-vpc", "created-vpc", "pinned-zones", "unknown-zone"],
)
def test_a_pool_no_zone_offers_stops_the_preview(cluster_keys: dict[str, Any], message: str) -> None:
    document = in_region("eu-west-1", **cluster_keys)
    if "gpuNodePools" not in cluster_keys:
        document["config"]["vllm-platform:cluster"]["gpuNodePools"] = [P4D_POOL]
    document["config"]["vllm-platform:models"] = [{"name": "qwen", "model": "Qwen/Qwen2.5-7B-Instruct", "gpuPool": "p4d"}]
    with pytest.raises(pulumi.RunError) as error:
        render_document(document)
    assert str(error.value).startswith(message)


def test_pinned_zones_hold_whatever_ec2_offers() -> None:
    rendering = render_document(cluster_document(vpc={"zones": ["us-west-2c", "us-west-2b"]}))
    subnets = [r.inputs["availabilityZone"] for r in resources_of(rendering, "aws:ec2/subnet:Subnet")]
    assert sorted(set(subnets)) == ["us-west-2b", "us-west-2c"] and len(subnets) == 4
    with pytest.raises(ConfigError) as error:
        document_config(cluster_document(vpc={"zones": ["us-west-2a", "us-west-2b"], "availabilityZones": 3}))
    assert any("availabilityZones 3 but zones names 2" in p for p in error.value.problems)


def test_an_existing_vpc_is_used_not_created() -> None:
    vpc = {"id": "vpc-0123456789abcdef0", "privateSubnetIds": ["subnet-0123456789abcdefa", "subnet-0123456789abcdefb"], "publicSubnetIds": ["subnet-0123456789abcdefc"]}
    rendering = render_document(cluster_document(vpc=vpc))
    assert not [r for r in rendering.resources if r.type.startswith(("aws:ec2/vpc:", "aws:ec2/subnet:", "aws:ec2/natGateway:", "aws:ec2/vpcEndpoint:"))]
    assert one(rendering, "aws:eks/cluster:Cluster", "eks").inputs["vpcConfig"]["subnetIds"] == ["subnet-0123456789abcdefa", "subnet-0123456789abcdefb"]
    assert rendering.outputs["vpcId"] == "vpc-0123456789abcdef0" and rendering.outputs["privateSubnetIds"] == ["subnet-0123456789abcdefa", "subnet-0123456789abcdefb"]


def load_balancer_identity(rendering: Any) -> set[str]:
    """The AWS Load Balancer Controller's, where the gateway asks for an NLB."""
    gateway = rendering.plan.gateway
    return {"kube-system/aws-load-balancer-controller"} if gateway is not None and gateway.load_balanced else set()


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_outputs_are_the_documented_contract(stack: str) -> None:
    rendering = rendered_stack(stack)
    outputs = rendering.outputs
    assert CLUSTER_OUTPUTS | {"namespace", "models"} <= set(outputs)
    assert outputs["kubeconfig"] == mocks.SECRET_PLACEHOLDER
    assert outputs["clusterName"] == rendering.config.cluster.name
    assert outputs["clusterEndpoint"].startswith("https://")
    assert outputs["gpuPriceSource"] == PRICE_SOURCE and str(2026) in PRICE_SOURCE
    secret = [k for k, v in outputs.items() if mocks.SECRET_PLACEHOLDER in json.dumps(v)]
    assert secret == ["kubeconfig"]
    pools = outputs["gpuPools"]
    assert set(pools) == set(rendering.config.cluster.pools)
    assert all(set(p) == POOL_KEYS for p in pools.values())
    assert outputs["maxHourlyGpuCostUsd"] == pytest.approx(sum(p["maxHourlyCostUsd"] for p in pools.values()))
    assert set(outputs["podIdentity"]["roleArns"]) == {
        "kube-system/karpenter", "kube-system/ebs-csi-controller-sa"
    } | cache_identities(rendering) | load_balancer_identity(rendering)  # fmt: skip
    # The gateway's door, for clients and for other stacks: the OpenAI base URL and where its Service is.
    gateway = rendering.plan.gateway
    assert gateway is not None
    assert outputs["endpoint"] == (
        f"https://{gateway.hostname}/v1" if gateway.hostname else f"http://k8s-llm-gateway-service-{mocks.FAKE_NAME_SUFFIX}.elb.us-west-2.amazonaws.com/v1"
    )
    assert outputs["gateway"]["namespace"] == "envoy-gateway-system" and outputs["gateway"]["service"] == "llm-gateway"
    assert {m["gatewayModelName"] for m in outputs["models"].values()} == {r.served_name for r in gateway.routes}


@pytest.mark.parametrize(
    "capacity_types, capacity_type",
    [(["on-demand"], "ON_DEMAND"), (["spot"], "SPOT"), (["spot", "on-demand"], "SPOT"), (["reserved", "spot", "on-demand"], "RESERVED")],
)
def test_a_pools_capacity_type_output_keeps_the_node_groups_words_and_capacity_types_karpenters(
    capacity_types: list[str], capacity_type: str
) -> None:
    """The outputs' names and shapes change only with a major version: capacityType is still ON_DEMAND or SPOT (and
    RESERVED for a pool that prefers a reservation), beside the list in Karpenter's own words."""
    keys: dict[str, Any] = {"capacityTypes": capacity_types}
    if "reserved" in capacity_types:
        keys["capacityReservations"] = [{"id": "cr-0123456789abcdef0"}]
    summary = render_document(pool_document(False, **keys)).outputs["gpuPools"]["g5"]
    assert (summary["capacityType"], summary["capacityTypes"]) == (capacity_type, capacity_types)


def test_prod_costs_at_most_its_pools_at_list_price() -> None:
    pools = rendered_stack("prod").outputs["gpuPools"]
    assert pools["p4d"]["maxGpus"] == 24 and pools["p4d"]["gpuModel"] == "A100-40GB"
    assert pools["p4d"]["maxHourlyCostUsd"] == round(3 * INSTANCE_TYPES["p4d.24xlarge"].on_demand_usd_per_hour, 2)


# --- existing cluster ------------------------------------------------------------------------


def existing_rendering(**existing: Any) -> render.Rendering:
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    if existing:
        document["config"]["vllm-platform:cluster"]["existing"] = existing
    return render_document(document, "existing")


@pytest.mark.parametrize(
    "existing",
    [{}, {"kubeconfig": {"secure": "AAABAkubeconfig"}}, {"context": "team-a"}],
    ids=["stack-reference", "kubeconfig", "context"],
)
def test_existing_cluster_deploys_models_only_through_its_provider(existing: dict[str, Any]) -> None:
    rendering = existing_rendering(**existing)
    assert not [r for r in rendering.resources if r.type.startswith("aws:")]
    (provider,) = of_type(rendering, "pulumi:providers:kubernetes")
    assert provider.name == "existing"
    kubernetes = [r for r in rendering.resources if r.type.startswith("kubernetes:")]
    assert {r.type for r in kubernetes} >= {"kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service"}
    assert all(r.provider and r.provider.split("::")[-2] == "existing" for r in kubernetes)
    assert not [r for r in kubernetes if r.inputs.get("kind") == "StorageClass" or r.name in ("nvidia-device-plugin", "karpenter")]
    assert not [r for r in kubernetes if r.type.startswith("kubernetes:karpenter")], "the existing cluster's capacity is its own"
    if "context" in existing:
        assert provider.inputs == {"context": "team-a"}
        assert "kubeconfig" not in rendering.outputs
    else:
        assert provider.inputs["kubeconfig"] == mocks.SECRET_PLACEHOLDER
        assert rendering.outputs["kubeconfig"] == mocks.SECRET_PLACEHOLDER


@pytest.mark.parametrize(
    "cluster_keys, message",
    [
        ({"protect": True}, "cluster.existing: protect has no effect on an existing cluster; remove it"),
        (
            {"vpc": {"availabilityZones": 3}, "endpoint": {"publicAccessCidrs": ["0.0.0.0/0"]}, "adminPrincipalArns": [ADMIN]},
            "cluster.existing: vpc, endpoint and adminPrincipalArns have no effect on an existing cluster; remove them",
        ),
        (
            {"systemNodes": {"minSize": 4}, "viewerPrincipalArns": [ADMIN], "supportType": "EXTENDED"},
            "cluster.existing: supportType, systemNodes and viewerPrincipalArns have no effect on an existing cluster",
        ),
        (
            {"existing": {"kubeconfig": {"secure": "AAABAkubeconfig"}, "kubeconfigOutput": "config"}},
            "cluster.existing: kubeconfigOutput names an output of stackReference: no effect without it; remove it",
        ),
    ],
)
def test_keys_an_existing_cluster_ignores_are_refused(cluster_keys: dict[str, Any], message: str) -> None:
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    document["config"]["vllm-platform:cluster"].update(cluster_keys)
    with pytest.raises(ConfigError) as error:
        document_config(document)
    (problem,) = error.value.problems
    assert problem.startswith(message)


def test_a_pools_karpenter_keys_are_refused_on_an_existing_cluster_and_its_fit_keys_kept() -> None:
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    (pool,) = document["config"]["vllm-platform:cluster"]["gpuNodePools"]
    pool.update({"maxSize": 6, "warmNodes": 1, "minSize": 2, "rootVolumeGiB": 300, "capacityTypes": ["spot"]})
    assert document_config(document).cluster.pools["g5"].max_size == 6, "the fit checks and warm nodes still read these"
    pool.update({"expireAfter": "720h", "placementGroup": True})
    with pytest.raises(ConfigError) as error:
        document_config(document)
    (problem,) = error.value.problems
    assert problem.startswith(
        "cluster.existing: gpuNodePools[g5].expireAfter and gpuNodePools[g5].placementGroup "
        "have no effect on an existing cluster; remove them"
    )


def pool_document(existing: bool, **pool_keys: Any) -> dict[str, Any]:
    """The existing-cluster example, or the minimal created one, with these keys on its g5 pool."""
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text()) if existing else minimal_document()
    document["config"]["vllm-platform:cluster"]["gpuNodePools"][0].update(pool_keys)
    return document


# (cluster, refused pool keys, accepted pool keys beside them, the refusal): each refusal names a key its cluster takes.
CAPACITY_KEYS_REFUSED_BESIDE_ACCEPTED = [
    ("created", {"capacityType": "SPOT"}, {"capacityTypes": ["spot"]},
     "cluster: gpuNodePools[g5].capacityType describes an existing cluster's node group; on a created cluster, capacityType "
     "is replaced by capacityTypes, Karpenter's list in its order of preference: ON_DEMAND is capacityTypes: [on-demand], SPOT is [spot]"),
    ("existing", {"capacityType": "SPOT", "capacityTypes": ["spot"]}, {"capacityTypes": ["spot"]},
     "cluster.gpuNodePools[g5]: capacityType and capacityTypes both give the capacity types; keep capacityTypes"),
    ("existing", {"capacityType": "SPOT", "capacityTypes": ["spot"]}, {"capacityType": "SPOT"},
     "cluster.gpuNodePools[g5]: capacityType and capacityTypes both give the capacity types; keep capacityTypes"),
    ("existing", {"capacityType": "spot"}, {"capacityType": "SPOT"},
     "cluster.gpuNodePools[g5].capacityType: Input should be 'ON_DEMAND' or 'SPOT'"),
    ("existing", {"capacityTypes": ["reserved"]}, {"capacityTypes": ["reserved"], "capacityReservations": [{"id": "cr-0123456789abcdef0"}]},
     "cluster.gpuNodePools[g5]: capacityTypes has reserved but capacityReservations is empty"),
]  # fmt: skip


@pytest.mark.parametrize("cluster_kind, refused, accepted, message", CAPACITY_KEYS_REFUSED_BESIDE_ACCEPTED)
def test_a_pools_capacity_keys_are_refused_only_for_a_key_its_cluster_takes(
    cluster_kind: str, refused: dict[str, Any], accepted: dict[str, Any], message: str
) -> None:
    document_config(pool_document(cluster_kind == "existing", **accepted))
    with pytest.raises(ConfigError) as error:
        document_config(pool_document(cluster_kind == "existing", **refused))
    (problem,) = error.value.problems
    assert problem.startswith(message)


@pytest.mark.parametrize(
    "pool_keys, capacity_type, capacity_types, reservations",
    [
        ({}, "ON_DEMAND", ["on-demand"], []),
        ({"capacityType": "ON_DEMAND"}, "ON_DEMAND", ["on-demand"], []),
        ({"capacityType": "SPOT"}, "SPOT", ["spot"], []),
        ({"capacityTypes": ["spot"]}, "SPOT", ["spot"], []),
        ({"capacityTypes": ["reserved", "on-demand"], "capacityReservations": [{"id": "cr-0123456789abcdef0"}]},
         "RESERVED", ["reserved", "on-demand"], ["cr-0123456789abcdef0"]),
    ],
)  # fmt: skip
def test_an_existing_clusters_pool_describes_its_node_groups_capacity_in_the_outputs(
    pool_keys: dict[str, Any], capacity_type: str, capacity_types: list[str], reservations: list[str]
) -> None:
    """The path to an existing cluster describes its node groups as it always did: `capacityType` as before."""
    summary = render_document(pool_document(True, **pool_keys), "existing").outputs["gpuPools"]["g5"]
    assert (summary["capacityType"], summary["capacityTypes"], summary["capacityReservations"]) == (capacity_type, capacity_types, reservations)


def test_an_existing_node_groups_minimum_counts_in_its_idle_cost() -> None:
    """The path to an existing cluster describes its node groups as it always did: their minimum is real there."""
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    document["config"]["vllm-platform:cluster"]["gpuNodePools"][0]["minSize"] = 3
    summary = render_document(document, "existing").outputs["gpuPools"]["g5"]
    assert (summary["minNodes"], summary["idleNodes"]) == (3, 3)
    document["config"]["vllm-platform:cluster"]["gpuNodePools"][0].update(minSize=2, warmNodes=1)
    summary = render_document(document, "existing").outputs["gpuPools"]["g5"]
    assert summary["idleNodes"] == 2, "qwen-7b's node and the warm one are the group's two"
    plain = existing_rendering().outputs["gpuPools"]["g5"]
    assert (plain["minNodes"], plain["idleNodes"]) == (0, 1), "replicas.min 1 of qwen-7b holds one node"


def test_a_checkpoint_downloaded_onto_an_existing_node_group_must_fit_its_root_volume() -> None:
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    (pool,) = document["config"]["vllm-platform:cluster"]["gpuNodePools"]
    pool["rootVolumeGiB"] = 50
    with pytest.raises(ConfigError) as error:
        document_plan(document)
    (problem,) = error.value.problems
    assert problem.startswith("models[qwen-7b]: the checkpoint it downloads from the hub needs ~55 GiB of node disk with the image, "
                              "but pool g5's nodes have rootVolumeGiB 50")  # fmt: skip
    pool["rootVolumeGiB"] = 60
    assert document_plan(document).pools[0].root_volume_gib == 60
    del pool["rootVolumeGiB"]
    assert document_plan(document).pools[0].root_volume_gib == 200, "the node group's disk the checks always assumed"


def test_an_existing_cluster_is_told_to_grant_s3_reads_itself() -> None:
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    document["config"]["vllm-platform:models"][0]["model"] = "s3://acme-models/qwen-7b/"
    assert list(document_plan(document).notes) == [
        "models[qwen-7b]: s3://acme-models/qwen-7b/ is read with the pod's own AWS identity; an existing-cluster "
        "stack creates no IAM, so give ServiceAccount team-a-inference/qwen-7b read access to it there"
    ]


def test_existing_cluster_outputs_what_is_known() -> None:
    outputs = existing_rendering().outputs
    assert outputs["clusterName"] == "shared-gpu"
    assert outputs["gpuPools"]["g5"]["maxHourlyCostUsd"] == round(4 * INSTANCE_TYPES["g5.2xlarge"].on_demand_usd_per_hour, 2)
    assert outputs["maxHourlyGpuCostUsd"] == outputs["gpuPools"]["g5"]["maxHourlyCostUsd"]
    assert not {"clusterEndpoint", "vpcId", "privateSubnetIds", "oidcIssuerUrl"} & set(outputs)


def test_an_existing_clusters_name_comes_from_its_stack_when_not_given() -> None:
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    del document["config"]["vllm-platform:cluster"]["name"]
    assert render_document(document, "existing").outputs["clusterName"] == mocks.FAKE_REFERENCED_CLUSTER
    assert existing_rendering().outputs["clusterName"] == "shared-gpu", "a name given wins"


def test_an_existing_clusters_name_is_asked_for_when_its_stack_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    reference = mocks.FAKE_STATE["pulumi:pulumi:StackReference"]
    without_name = lambda *args, **kwargs: {"outputs": {k: v for k, v in reference(*args, **kwargs)["outputs"].items() if k != "clusterName"}}
    monkeypatch.setitem(mocks.FAKE_STATE, "pulumi:pulumi:StackReference", without_name)
    # Named in the config: the referenced stack's outputs are not asked for its name.
    assert render_document(document, "existing").outputs["clusterName"] == "shared-gpu"
    del document["config"]["vllm-platform:cluster"]["name"]
    with pytest.raises(pulumi.RunError, match=r"cluster.name: not set, and stack .* has no clusterName output; set cluster.name"):
        render_document(document, "existing")


@pytest.mark.parametrize("existing", [{"context": "team-a"}, {"kubeconfig": {"secure": "AAABAkubeconfig"}}], ids=["context", "kubeconfig"])
def test_an_existing_cluster_no_stack_names_needs_a_name(existing: dict[str, Any]) -> None:
    document = yaml.safe_load(EXISTING_EXAMPLE.read_text())
    document["config"]["vllm-platform:cluster"]["existing"] = existing
    render_document(document, "existing")
    del document["config"]["vllm-platform:cluster"]["name"]
    with pytest.raises(ConfigError) as error:
        document_config(document)
    (problem,) = error.value.problems
    assert problem.startswith("cluster: name is required: set cluster.name")


def test_a_created_cluster_needs_a_name() -> None:
    document = cluster_document()
    del document["config"]["vllm-platform:cluster"]["name"]
    with pytest.raises(ConfigError) as error:
        document_config(document)
    assert error.value.problems == [
        "cluster: name is required: set cluster.name to the EKS cluster's name (or, for an existing cluster, "
        "existing.stackReference to a stack whose clusterName output names it)"
    ]


@pytest.mark.parametrize("region", sorted(offerings.REGION_ZONES))
def test_the_offline_zone_table_names_each_regions_own_zones(region: str) -> None:
    """What the mocks answer the program's zone and offering lookups with, for every region the table has."""
    zones = offerings.zones(region)
    assert zones and all(name.startswith(region) and name[len(region):].isalpha() for name, _ in zones)
    assert set(offerings.offered_by_name(region)) <= {name for name, _ in zones}


# One region per continent and partition: rendering each of the table's 21 would cost the suite half a minute.
@pytest.mark.parametrize("region", ["eu-north-1", "ap-south-1", "sa-east-1", "cn-north-1"])
def test_the_offline_zones_follow_the_stacks_region(region: str) -> None:
    """A region where g5 is offered renders the minimal stack in its own zones (tools/offerings.py)."""
    assert any("g5.xlarge" in types for types in offerings.offered_by_name(region).values())
    rendering = render_document(in_region(region))
    zones = {r.inputs["availabilityZone"] for r in resources_of(rendering, "aws:ec2/subnet:Subnet")}
    assert zones and all(zone.startswith(region) for zone in zones)


def test_a_region_the_offline_render_does_not_know_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="aws:region: the offline render knows no zones of 'mars-east-1'"):
        render_document(in_region("mars-east-1"))
    render_document(in_region("eu-north-1"))


def test_the_offline_table_has_offerings_for_every_catalog_type() -> None:
    """A type the table lacked would render as one no zone offers, blaming EC2 for the render's own gap."""
    offered_somewhere = {t for zones in offerings.OFFERINGS.values() for types in zones.values() for t in types}
    assert set(INSTANCE_TYPES) <= offered_somewhere


@pytest.mark.parametrize(("region", "offered"), [("us-west-1", True), ("eu-west-1", False)])
def test_p5_renders_where_the_catalog_lists_it_and_is_refused_by_region_where_not(region: str, offered: bool) -> None:
    document = in_region(region)
    cluster = document["config"]["vllm-platform:cluster"]
    cluster["gpuNodePools"] = [{"name": "h100", "instanceTypes": ["p5.48xlarge"], "minSize": 0, "maxSize": 1, "rootVolumeGiB": 300}]
    document["config"]["vllm-platform:models"][0]["gpuPool"] = "h100"
    if offered:
        rendering = render_document(document)
        assert {r.inputs["availabilityZone"] for r in resources_of(rendering, "aws:ec2/subnet:Subnet")} == {"us-west-1a", "us-west-1c"}
        return
    with pytest.raises(pulumi.RunError, match="no zone of region eu-west-1 does"):
        render_document(document)


def test_the_preview_prints_the_quotas_a_stack_draws_on() -> None:
    (info, spot), warnings = notes.quota_notes(rendered_stack("prod").plan)
    assert warnings == []
    # The system nodes: 6 of m6i.xlarge, 4 vCPUs each.
    assert "24 vCPUs of Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances (L-1216C47A" in info
    assert "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com" in spot
    assert "3 Elastic IPs (NAT gateways) (L-0263D0A3, default 5)" in info
    # p4d: 3 nodes of 96 vCPUs; g5.2xlarge: 8 nodes of 8.
    assert "288 vCPUs of Running On-Demand P instances (L-417A185B" in info
    assert "64 vCPUs of Running On-Demand G and VT instances (L-DB2E81BA" in info
    assert "request-service-quota-increase" in info


def test_more_nat_gateways_than_the_default_elastic_ips_are_warned_about() -> None:
    plan = render.plan_of(stack_config(cluster_document(vpc={"availabilityZones": 6, "natGateways": "perAz"})))
    _, (warning,) = notes.quota_notes(plan)
    assert warning.startswith("cluster.vpc: 6 NAT gateways need 6 Elastic IPs, above the default quota of 5")
    five = render.plan_of(stack_config(cluster_document(vpc={"availabilityZones": 5, "natGateways": "perAz"})))
    assert notes.quota_notes(five)[1] == []
    spot = render.plan_of(stack_config(cluster_document(gpuNodePools=[{"name": "g5", "instanceTypes": ["g5.xlarge", "g5.2xlarge"], "maxSize": 3, "capacityTypes": ["spot"]}])))
    (info, _), _ = notes.quota_notes(spot)
    assert "24 vCPUs of All G and VT Spot Instance Requests (L-3819A6DF" in info, "the widest type at maxSize"
    on_demand = render.plan_of(stack_config(cluster_document(gpuNodePools=[{"name": "g5", "instanceTypes": ["g5.xlarge"], "maxSize": 3}])))
    assert len(notes.quota_notes(on_demand)[0]) == 1, "no Spot, no service-linked role to make"


P4_SPOT, P5_SPOT = "All P4, P3 and P2 Spot Instance Requests (L-7212CCBC", "All P5 Spot Instance Requests (L-C4BD4855"


@pytest.mark.parametrize("instance_type, spot, not_spot", [("p5.48xlarge", P5_SPOT, P4_SPOT), ("p4d.24xlarge", P4_SPOT, P5_SPOT)])
def test_p5_spot_draws_on_its_own_quota_and_every_p_on_demand_on_one(instance_type: str, spot: str, not_spot: str) -> None:
    # The document's model runs on the pool named g5, whatever its types.
    pool = {"name": "g5", "instanceTypes": [instance_type], "maxSize": 2, "capacityTypes": ["spot", "on-demand"]}
    (info, _), warnings = notes.quota_notes(render.plan_of(stack_config(cluster_document(gpuNodePools=[pool]))))
    vcpus = 2 * catalog.INSTANCE_TYPES[instance_type].vcpu
    assert f"{vcpus} vCPUs of {spot}" in info and not_spot not in info
    assert f"{vcpus} vCPUs of Running On-Demand P instances (L-417A185B" in info
    assert warnings == [], "AWS publishes no vCPU default to compare with"


@pytest.mark.parametrize(
    "instance_type, vcpus", [("m6i.large", 2), ("m6i.xlarge", 4), ("c7g.16xlarge", 64), ("t3.medium", None), ("m7i.metal-24xl", None)]
)
def test_a_sizes_vcpus_are_read_from_its_name_where_the_name_says(instance_type: str, vcpus: Any) -> None:
    assert catalog.size_vcpus(instance_type) == vcpus


def test_an_existing_cluster_draws_on_no_quota_of_this_stacks() -> None:
    assert notes.quota_notes(existing_rendering().plan) == ([], [])


def key_policy(rendering: render.Rendering) -> dict[str, dict[str, Any]]:
    """The platform key's policy statements, by Sid."""
    document = json.loads(one(rendering, "aws:kms/key:Key", "secrets").inputs["policy"])
    return {statement["Sid"]: statement for statement in document["Statement"]}


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_the_kms_key_policy_admits_the_account_and_ec2_volumes_of_any_launcher(stack: str) -> None:
    """Spot and fleet launches come from EC2's service-linked roles, which no IAM policy can grant the key:
    only a key-policy statement for whoever calls through EC2 lets their encrypted root volumes attach."""
    rendering = rendered_stack(stack)
    account = rendering.config.cluster.admin_principal_arns[0].split(":")[4]
    region = stack_document(stack)["config"]["aws:region"]
    statements = key_policy(rendering)
    assert set(statements) == {"AccountAdministersTheKey", "VolumesThroughEc2"}
    admin = statements["AccountAdministersTheKey"]
    assert (admin["Principal"], admin["Action"], admin["Resource"]) == ({"AWS": f"arn:aws:iam::{account}:root"}, "kms:*", "*")
    volumes = statements["VolumesThroughEc2"]
    assert volumes["Principal"] == {"AWS": "*"} and volumes["Resource"] == "*"
    assert set(volumes["Action"]) == {
        "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey",
    }  # fmt: skip
    assert volumes["Condition"] == {"StringEquals": {"kms:CallerAccount": account, "kms:ViaService": f"ec2.{region}.amazonaws.com"}}


@pytest.mark.parametrize("region, partition, domain", [("eu-west-1", "aws", "amazonaws.com"), ("cn-north-1", "aws-cn", "amazonaws.com.cn")])
def test_the_kms_key_policy_follows_the_stacks_region_and_partition(region: str, partition: str, domain: str) -> None:
    statements = key_policy(render_document(in_region(region)))
    assert statements["VolumesThroughEc2"]["Condition"]["StringEquals"]["kms:ViaService"] == f"ec2.{region}.{domain}"
    assert statements["AccountAdministersTheKey"]["Principal"] == {"AWS": f"arn:{partition}:iam::123456789012:root"}
