"""`cluster`: the EKS cluster the program creates, with its network and GPU pools, or an existing one."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Optional

from pydantic import Field, StrictBool, StrictInt, StrictStr, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from vllm_platform.config.base import (
    DNS_1123_LABEL,
    PRINTABLE_WORD,
    Section,
    check_cidrs,
    check_label,
    check_ordered,
    check_pattern,
    duplicates,
)
from vllm_platform.config.pools import GpuNodePool
from vllm_platform.config.secrets import set_command
from vllm_platform.pins import DEFAULT_GPU_AMI_ALIAS, DEFAULT_KUBERNETES_VERSION, SUPPORTED_KUBERNETES_VERSIONS

ANYWHERE = "0.0.0.0/0"
EC2_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+", re.ASCII)
# us-west-2a, and Local Zones such as us-west-2-lax-1a.
ZONE_NAME = re.compile(r"[a-z]{2}(-[a-z0-9]+)+", re.ASCII)
VPC_ID = re.compile(r"vpc-([0-9a-f]{8}|[0-9a-f]{17})", re.ASCII)
SUBNET_ID = re.compile(r"subnet-([0-9a-f]{8}|[0-9a-f]{17})", re.ASCII)
STACK_OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
STACK_REFERENCE = re.compile(r"[\w.-]+/[\w.-]+/[\w.-]+", re.ASCII)
IAM_PRINCIPAL = re.compile(r"arn:aws[\w-]*:iam::\d{12}:(user|role)/[\w+=,.@/-]+", re.ASCII)


# Karpenter's controller runs on the system nodes, one replica to a node (its chart's pod anti-affinity),
# never on a node it launched: with fewer system nodes a replica stays Pending and its Helm release never
# becomes ready.
KARPENTER_REPLICAS = 2
MAX_SYSTEM_GROUP_SIZE = 100
# Three by default: two hold a minimal stack, but not the gateway's proxies beside a rollout's surge pod, and a
# third keeps both Karpenter replicas up while one node is drained or replaced.
DEFAULT_SYSTEM_NODES = 3


class SystemNodes(Section):
    """The managed node group for the add-ons, Prometheus, KEDA and Karpenter: label `node-type: system`, no taint."""

    instance_type: StrictStr = Field("m6i.xlarge", description="EC2 instance type of the system nodes")
    min_size: StrictInt = Field(
        DEFAULT_SYSTEM_NODES,
        description=(
            f"nodes, fixed (nothing scales the group); {KARPENTER_REPLICAS} or more: Karpenter's {KARPENTER_REPLICAS} controller "
            "replicas run one to a system node. The preview checks the platform's system pods fit them"
        ),
    )
    max_size: StrictInt = Field(DEFAULT_SYSTEM_NODES + 1, ge=KARPENTER_REPLICAS, le=MAX_SYSTEM_GROUP_SIZE, description="the node group's ceiling, for a manual resize")
    root_volume_gib: StrictInt = Field(50, ge=20, le=16384, alias="rootVolumeGiB", description="encrypted gp3 root volume")

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        return check_pattern(value, EC2_INSTANCE_TYPE, "an EC2 instance type such as m6i.large")

    @field_validator("min_size")
    @classmethod
    def _holds_karpenter(cls, value: int) -> int:
        if value < KARPENTER_REPLICAS:
            raise ValueError(
                f"{value} is below {KARPENTER_REPLICAS}: Karpenter's {KARPENTER_REPLICAS} controller replicas run one "
                "to a system node, never on a GPU node it launched"
            )
        return value

    @model_validator(mode="after")
    def _sizes_ordered(self) -> "SystemNodes":
        check_ordered(self.min_size, self.max_size)
        return self


class NatGateways(StrEnum):
    SINGLE = "single"
    PER_AZ = "perAz"


class Vpc(Section):
    cidr: StrictStr = Field(
        "10.0.0.0/16",
        description="IPv4 /16 to /20; split into one large private subnet per zone (pods take VPC addresses) and small public ones",
    )
    availability_zones: StrictInt = Field(
        2,
        ge=2,
        le=6,
        description=(
            "2 to 6 zones of the region, chosen where EC2 offers the GPU pools' instance types "
            "(`DescribeInstanceTypeOfferings`): first a zone for each pool, then those offering the most pools, by name "
            "among equals. Each GPU pool's nodes get only the private subnets whose zone offers all its types; a pool no "
            "chosen zone offers stops the preview, naming the pool, its types and the zones that would do. The choice "
            "follows the pools and EC2's offerings, either of which can change under a running cluster and move its "
            "subnets, so the preview warns until `vpc.zones` pins it"
        ),
    )
    # Pinned zone names: unset, the choice follows EC2's offerings, which can change under a running VPC.
    zones: Optional[list[StrictStr]] = Field(
        None,
        description=(
            "the zone names, pinned (the committed stacks pin theirs): the VPC never moves. Checked at preview: each must "
            "be a zone of the region, and each GPU pool must find its types offered in one of them, or the preview stops "
            "naming the pool and the zones that would do"
        ),
    )
    nat_gateways: NatGateways = Field(NatGateways.SINGLE, description="`single`, or `perAz` for one NAT gateway per zone")
    id: Optional[StrictStr] = Field(
        None,
        description=(
            "use an existing VPC instead, with `privateSubnetIds` in at least two zones (and `publicSubnetIds`), tagged "
            "for load balancers yourself. Each GPU pool uses those whose zone offers its instance types, and a pool none "
            "fits stops the preview"
        ),
    )
    private_subnet_ids: list[StrictStr] = Field([], description="with `id`: the existing VPC's private subnets")
    public_subnet_ids: list[StrictStr] = Field([], description="with `id`: the existing VPC's public subnets")

    @field_validator("cidr")
    @classmethod
    def _valid_cidr(cls, value: str) -> str:
        check_cidrs([value])
        network = ipaddress.ip_network(value, strict=True)
        if network.version != 4 or not 16 <= network.prefixlen <= 20:
            raise ValueError(f"{value!r} must be an IPv4 network of /16 to /20, large enough for pod IPs")
        # No VPC can route these: the host itself, a link's own, multicast, reserved, or "this network".
        special = next(
            (
                kind
                for kind, hit in (
                    ("loopback", network.is_loopback),
                    ("link-local", network.is_link_local),
                    ("multicast", network.is_multicast),
                    ("reserved", network.is_reserved),
                    ('"this network" (0.0.0.0/8)', network.subnet_of(ipaddress.IPv4Network("0.0.0.0/8"))),
                )
                if hit
            ),
            None,
        )
        if special:
            raise ValueError(
                f"{value!r} is in a {special} range, which a VPC cannot route; use a private range such as 10.0.0.0/16"
            )
        return value

    @field_validator("zones")
    @classmethod
    def _zone_names(cls, values: Optional[list[str]]) -> Optional[list[str]]:
        for value in values or []:
            check_pattern(value, ZONE_NAME, "an availability zone name such as us-west-2a")
        return values

    @field_validator("id")
    @classmethod
    def _vpc_id(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_pattern(value, VPC_ID, "a VPC id such as vpc-0123456789abcdef0")

    @field_validator("private_subnet_ids", "public_subnet_ids")
    @classmethod
    def _subnet_ids(cls, values: list[str]) -> list[str]:
        for value in values:
            check_pattern(value, SUBNET_ID, "a subnet id such as subnet-0123456789abcdef0")
        return values

    @model_validator(mode="after")
    def _zones_agree(self) -> "Vpc":
        if self.zones is None:
            return self
        if len(set(self.zones)) != len(self.zones) or not 2 <= len(self.zones) <= 6:
            raise ValueError(f"zones {self.zones} must name 2 to 6 different availability zones")
        if "availability_zones" in self.model_fields_set and self.availability_zones != len(self.zones):
            raise ValueError(f"availabilityZones {self.availability_zones} but zones names {len(self.zones)}; drop one of the two")
        return self

    @property
    def zone_count(self) -> int:
        return len(self.zones) if self.zones else self.availability_zones

    @model_validator(mode="after")
    def _existing_vpc_complete(self) -> "Vpc":
        if self.id and len(self.private_subnet_ids) < 2:
            raise ValueError("an existing vpc (id) needs privateSubnetIds in at least two availability zones")
        if not self.id and (self.private_subnet_ids or self.public_subnet_ids):
            raise ValueError("privateSubnetIds and publicSubnetIds are only for an existing vpc: set vpc.id too")
        return self


class Endpoint(Section):
    private_access: StrictBool = Field(
        True,
        description=(
            "API server reachable from inside the VPC. `false` is refused unless `publicAccessCidrs` holds `0.0.0.0/0`: "
            "the nodes would reach a public-only endpoint from the NAT gateways' addresses, outside any narrower list, "
            "and never join"
        ),
    )
    # Empty means no public endpoint: reach the API from inside the VPC (a VPN, or CI runners there).
    public_access_cidrs: list[StrictStr] = Field(
        [], description="CIDRs allowed to reach the public API endpoint; empty means no public endpoint"
    )

    @field_validator("public_access_cidrs")
    @classmethod
    def _valid_cidrs(cls, values: list[str]) -> list[str]:
        return check_cidrs(values)

    @model_validator(mode="after")
    def _reachable(self) -> "Endpoint":
        if not self.private_access and not self.public_access_cidrs:
            raise ValueError("privateAccess false with no publicAccessCidrs leaves the API server unreachable")
        if not self.private_access and ANYWHERE not in self.public_access_cidrs:
            raise ValueError(
                f"privateAccess false with publicAccessCidrs {', '.join(self.public_access_cidrs)}: nodes in the "
                f"private subnets reach the public endpoint from the NAT gateways' addresses, which the list does "
                f"not admit, so they would never join; keep privateAccess true (or admit {ANYWHERE})"
            )
        return self


class ExistingCluster(Section):
    stack_reference: Optional[StrictStr] = Field(
        None, description="a fully qualified stack `org/project/stack` whose output `kubeconfigOutput` holds the kubeconfig"
    )
    kubeconfig_output: StrictStr = Field("kubeconfig", description="the output of `stackReference` that holds the kubeconfig")
    kubeconfig: Optional[StrictStr] = Field(
        None,
        repr=False,
        description=f"a kubeconfig, as a secret: `{set_command('cluster.existing.kubeconfig')} < kubeconfig.yaml`",
    )
    context: Optional[StrictStr] = Field(None, description="a context of your own kubeconfig")

    @field_validator("stack_reference")
    @classmethod
    def _qualified(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not STACK_REFERENCE.fullmatch(value):
            raise ValueError(f"{value!r} is not a fully qualified stack name org/project/stack")
        return value

    @field_validator("kubeconfig_output")
    @classmethod
    def _output_name(cls, value: str) -> str:
        return check_pattern(value, STACK_OUTPUT_NAME, "a stack output name such as kubeconfig")

    @field_validator("context")
    @classmethod
    def _context_name(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_pattern(value, PRINTABLE_WORD, "a kubeconfig context name (printable ASCII, no spaces)")

    @model_validator(mode="after")
    def _one_source(self) -> "ExistingCluster":
        if self.stack_reference and self.kubeconfig:
            raise ValueError("set either stackReference or kubeconfig, not both")
        if not (self.stack_reference or self.kubeconfig or self.context):
            raise ValueError("name the cluster: stackReference, kubeconfig (a secret) or a kubeconfig context")
        if "kubeconfig_output" in self.model_fields_set and not self.stack_reference:
            raise ValueError("kubeconfigOutput names an output of stackReference: no effect without it; remove it")
        return self


# Keys that only shape a cluster the program creates.
CREATED_CLUSTER_KEYS = (
    "support_type", "vpc", "endpoint", "system_nodes", "protect", "admin_principal_arns", "viewer_principal_arns",
    "gpu_ami_alias",
)  # fmt: skip
# A pool's keys that only its Karpenter NodePool and EC2NodeClass read: an existing cluster gets neither. Its
# capacity types and reservations are not among them: there they describe the node group, as the outputs report it.
KARPENTER_POOL_KEYS = ("consolidate_after", "expire_after", "efa", "placement_group")
# An AL2023 release, never `latest`: a new AMI must come with a reviewed change, not on its own.
AMI_ALIAS = re.compile(r"al2023@v20[0-9]{6}", re.ASCII)


class SupportType(StrEnum):
    """EKS's upgrade policy once a version's standard support ends."""

    STANDARD = "STANDARD"
    EXTENDED = "EXTENDED"


class Cluster(Section):
    name: Optional[StrictStr] = Field(
        None,
        description=(
            "the EKS cluster's name (DNS-1123 label). Required, except for an existing cluster named by "
            "`existing.stackReference`, whose stack's `clusterName` output names it"
        ),
    )
    kubernetes_version: StrictStr = Field(
        DEFAULT_KUBERNETES_VERSION,
        description=(
            f"EKS minor version: `\"{SUPPORTED_KUBERNETES_VERSIONS[0]}\"` to `\"{SUPPORTED_KUBERNETES_VERSIONS[-1]}\"`, "
            "the minors Karpenter 1.14 supports that EKS offers (any other is refused); also the schema version the "
            "render is validated against. Raising it upgrades the control plane, then the add-ons to their default "
            "versions for the new minor (the most recent where AWS marks none) and the system node group (rolling, one "
            "node at a time); Karpenter replaces the GPU nodes as drifted, one at a time. EKS moves one minor per update"
        ),
    )
    # STANDARD: at the end of standard support AWS upgrades the control plane itself. EXTENDED keeps
    # the version for another 12 months at six times the control plane's price.
    support_type: SupportType = Field(
        SupportType.STANDARD,
        description=(
            "the EKS upgrade policy. `STANDARD`: when the version's standard support ends (14 months after its EKS "
            "release), AWS upgrades the control plane to the next minor itself; set `kubernetesVersion` to that minor "
            "for the next `pulumi up` (the old value would ask EKS for a downgrade, which it refuses). `EXTENDED`: the "
            "version stays for another 12 months, and the control plane then costs $0.60/h instead of $0.10/h"
        ),
    )
    gpu_ami_alias: StrictStr = Field(
        DEFAULT_GPU_AMI_ALIAS,
        description=(
            "the AMI of the GPU nodes, as a Karpenter alias pinned to an EKS AL2023 release (`al2023@vYYYYMMDD`, never "
            "`latest`); Karpenter picks its NVIDIA variant for GPU types. A new release replaces the nodes as drifted, "
            "one at a time, each drained within its models' grace periods"
        ),
    )
    vpc: Vpc = Field(Vpc(), description="the network the cluster runs in (see the `cluster.vpc` keys)")
    endpoint: Endpoint = Field(Endpoint(), description="who reaches the API server")
    system_nodes: SystemNodes = Field(SystemNodes(), description="the managed node group for the add-ons, Prometheus, KEDA and Karpenter")
    gpu_node_pools: list[GpuNodePool] = Field([], description="the GPU node pools (see the `cluster.gpuNodePools[]` keys)")
    protect: StrictBool = Field(
        False, description="Pulumi `protect` on the cluster, VPC and KMS key, and EKS deletion protection on the cluster"
    )
    # Who the cluster admits, through EKS access entries: everyone who runs `pulumi up` (CI's deploy
    # role, platform admins), and read-only identities such as the PR checks' preview role.
    admin_principal_arns: list[StrictStr] = Field(
        [],
        description=(
            "required for a created cluster: IAM users or roles granted cluster admin through access entries, every "
            "identity that runs `pulumi up` (CI's deploy role, platform admins). Access follows this list, never whoever "
            "happens to run Pulumi; a run by an identity on neither list stops before creating anything, naming it"
        ),
    )
    viewer_principal_arns: list[StrictStr] = Field(
        [],
        description=(
            "IAM users or roles granted read-only access to every resource, Secrets included (`AmazonEKSAdminViewPolicy`): "
            "the PR checks' preview role, on-call. `AmazonEKSViewPolicy` would not do: it cannot read Secrets, and a "
            "preview reads the Helm releases (kept in Secrets) and the Secrets it diffs. So treat the viewer role as one "
            "that can read the hfToken and the Grafana password"
        ),
    )
    # Last: its validator reads the keys above.
    existing: Optional[ExistingCluster] = Field(
        None,
        description=(
            "deploy onto an existing cluster: `{stackReference, kubeconfigOutput}`, `{kubeconfig}` (a secret) or "
            "`{context}`; creates no AWS resource. Only `name`, `kubernetesVersion` (then only the version the rendered "
            "manifests are checked against) and `gpuNodePools` apply then: `supportType`, `vpc`, `endpoint`, "
            "`systemNodes`, `protect`, `adminPrincipalArns`, `viewerPrincipalArns`, `gpuAmiAlias` and a pool's "
            "Karpenter keys (`consolidateAfter`, `expireAfter`, `efa`, `placementGroup`) are refused, since they "
            "would have no effect; a pool's `minSize`, `rootVolumeGiB`, `capacityTypes` (or the node group's "
            "`capacityType`) and `capacityReservations` describe its node group, for the fit checks and the outputs"
        ),
    )

    @field_validator("existing")
    @classmethod
    def _nothing_to_create(cls, value: Optional[ExistingCluster], info: ValidationInfo) -> Optional[ExistingCluster]:
        """A key that shapes the cluster the program would create must not look as if it applied to someone else's."""
        if value is None:
            return value
        ignored = [
            to_camel(key)
            for key in CREATED_CLUSTER_KEYS
            if key in info.data and info.data[key] != cls.model_fields[key].default
        ]
        ignored += [
            f"gpuNodePools[{pool.name}].{GpuNodePool.model_fields[key].alias or to_camel(key)}"
            for pool in info.data.get("gpu_node_pools", [])
            for key in KARPENTER_POOL_KEYS
            if getattr(pool, key) != GpuNodePool.model_fields[key].default
        ]
        if ignored:
            keys = ", ".join(ignored[:-1]) + " and " + ignored[-1] if len(ignored) > 1 else ignored[0]
            verb, pronoun = ("have", "them") if len(ignored) > 1 else ("has", "it")
            raise ValueError(f"{keys} {verb} no effect on an existing cluster; remove {pronoun}")
        return value

    @field_validator("admin_principal_arns", "viewer_principal_arns")
    @classmethod
    def _iam_principals(cls, values: list[str]) -> list[str]:
        for value in values:
            if not IAM_PRINCIPAL.fullmatch(value):
                raise ValueError(f"{value!r} is not an IAM user or role ARN (arn:aws:iam::<account>:role/<name>)")
        return values

    @model_validator(mode="after")
    def _no_idle_minimum_on_karpenter(self) -> "Cluster":
        held = [pool for pool in self.gpu_node_pools if pool.min_size > 0]
        if self.existing is None and held:
            raise ValueError(
                f"gpuNodePools[{held[0].name}].minSize {held[0].min_size}: Karpenter keeps no idle minimum here (its "
                "static capacity is alpha in v1.14, and not used); a node stays while a pod needs it, so the models' "
                "replicas.min hold the pool's nodes. Raise replicas.min of a model on the pool (or set warmNodes for "
                "idle nodes), and remove minSize"
            )
        return self

    @model_validator(mode="after")
    def _capacity_types_on_karpenter(self) -> "Cluster":
        named = [pool for pool in self.gpu_node_pools if pool.capacity_type is not None]
        if self.existing is None and named:
            raise ValueError(
                f"gpuNodePools[{named[0].name}].capacityType describes an existing cluster's node group; on a created "
                "cluster, capacityType is replaced by capacityTypes, Karpenter's list in its order of preference: "
                "ON_DEMAND is capacityTypes: [on-demand], SPOT is [spot], and [spot, on-demand] falls back to on-demand"
            )
        return self

    @model_validator(mode="after")
    def _someone_administers(self) -> "Cluster":
        if self.existing is None and not self.admin_principal_arns:
            raise ValueError(
                "adminPrincipalArns is empty: list the IAM roles or users that run `pulumi up` (CI's deploy role, "
                "platform admins); a created cluster admits no one else"
            )
        both = sorted(set(self.admin_principal_arns) & set(self.viewer_principal_arns))
        if both:
            raise ValueError(f"{', '.join(both)} is in both adminPrincipalArns and viewerPrincipalArns; keep one")
        for key, arns in (("adminPrincipalArns", self.admin_principal_arns), ("viewerPrincipalArns", self.viewer_principal_arns)):
            if twice := duplicates(arns):
                raise ValueError(f"{', '.join(twice)} is listed more than once in {key}; an access entry exists once")
        return self

    @model_validator(mode="after")
    def _named(self) -> "Cluster":
        if self.name is None and not (self.existing and self.existing.stack_reference):
            raise ValueError(
                "name is required: set cluster.name to the EKS cluster's name (or, for an existing cluster, "
                "existing.stackReference to a stack whose clusterName output names it)"
            )
        return self

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_label(value, DNS_1123_LABEL, "DNS-1123 label")

    @field_validator("gpu_ami_alias")
    @classmethod
    def _pinned_ami(cls, value: str) -> str:
        return check_pattern(value, AMI_ALIAS, f"an AL2023 release alias such as {DEFAULT_GPU_AMI_ALIAS} (never latest)")

    @field_validator("kubernetes_version")
    @classmethod
    def _supported_version(cls, value: str) -> str:
        if value not in SUPPORTED_KUBERNETES_VERSIONS:
            raise ValueError(
                f"{value!r} is not a Kubernetes minor version this platform supports: "
                f"{', '.join(SUPPORTED_KUBERNETES_VERSIONS)} (those Karpenter 1.14 supports that EKS offers), "
                f"written like \"1.34\""
            )
        return value

    @property
    def pools(self) -> dict[str, GpuNodePool]:
        return {p.name: p for p in self.gpu_node_pools}
