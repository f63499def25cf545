"""Pulumi mocks that record every registered resource, for the offline render and the tests.

The mock engine answers each resource with its own inputs plus the few outputs that real providers
compute (ids, ARNs, endpoints) and that the program reads back, so the real program runs unchanged.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

import grpc
import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from tools import offerings

from vllm_platform.config.loader import SECRET_PLACEHOLDER


def mask_secrets(value: Any, inside_secret: bool = False) -> Any:
    """Replace every value Pulumi holds as secret with the placeholder, keeping the shape around it.

    Also restores what the wire format loses: integers, and a stable key order.
    """
    if rpc.is_rpc_secret(value):
        return mask_secrets(rpc.unwrap_rpc_secret(value), inside_secret=True)
    if isinstance(value, pulumi.StringAsset):
        return {"text": value.text}
    if isinstance(value, dict):
        # Keys that start with "__" are internal to Pulumi (its SDK leaves them out of what it reads back): a
        # ConfigMap key such as `__init__.py` would not reach the cluster, and the render shows it missing too.
        return {k: mask_secrets(value[k], inside_secret) for k in sorted(value) if not k.startswith("__")}
    if isinstance(value, list):
        return [mask_secrets(v, inside_secret) for v in value]
    if inside_secret and value is not None:
        return SECRET_PLACEHOLDER
    # The wire format has only doubles; Kubernetes wants its ports and counts back as integers.
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass
class RecordedResource:
    type: str
    name: str
    parent: Optional[str]
    provider: Optional[str]
    custom: bool
    dependencies: list[str]
    inputs: dict[str, Any]
    ignore_changes: tuple[str, ...] = ()
    protect: bool = False

    def as_plan_entry(self) -> dict[str, Any]:
        # dependsOn: what the engine waits on before creating it, as it records them (depends_on, a component's
        # expanded to the component's resources, and every resource whose outputs are its inputs): what holds up
        # what is read from the render. Sorted, since the SDK collects them in a set.
        return {
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "dependsOn": sorted(self.dependencies),
            "inputs": self.inputs,
        }


def _short_urn(urn: str) -> Optional[str]:
    """'urn:pulumi:dev::proj::a$b:c:D::name' -> 'b:c:D::name'; None for the stack itself."""
    if not urn:
        return None
    qualified_type, name = urn.split("::")[2], urn.split("::", 3)[3]
    resource_type = qualified_type.split("$")[-1]
    return None if resource_type == "pulumi:pulumi:Stack" else f"{resource_type}::{name}"


# The region of a stack that names none (an existing cluster's, which calls no AWS function).
DEFAULT_REGION = "us-west-2"
FAKE_ACCOUNT = "123456789012"
# The ARN's service and resource prefix where they are not the Pulumi module's name and the bare name: an
# EventBridge rule is arn:aws:events:<region>:<account>:rule/<name>, an IAM role arn:aws:iam::<account>:role/<name>.
ARN_SHAPES = {"aws:cloudwatch/eventRule:EventRule": ("events", "rule/"), "aws:iam/role:Role": ("iam", "role/")}
# IAM is global: its ARNs leave the region empty; every other service the program reads an ARN of names it.
REGIONLESS_SERVICES = frozenset({"iam"})


def arn_resource_name(resource_type: str, physical_name: str, inputs: dict[str, Any]) -> str:
    """What follows the ARN's resource prefix: the physical name, after a role's path (role/PATH/NAME), as in IAM's."""
    path = inputs.get("path")
    if resource_type == "aws:iam/role:Role" and isinstance(path, str):
        return path.lstrip("/") + physical_name
    return physical_name


def _fake_arn(resource_type: str, name: str, region: str = DEFAULT_REGION) -> str:
    service, prefix = ARN_SHAPES.get(resource_type, (resource_type.split(":")[1].split("/")[0], ""))
    arn_region = "" if service in REGIONLESS_SERVICES else region
    return f"arn:{partition(region)[0]}:{service}:{arn_region}:{FAKE_ACCOUNT}:{prefix}{name}"


def _host(prefix: str, region: str) -> str:
    """A service's host in the region's partition: sqs.eu-north-1.amazonaws.com, elb.cn-north-1.amazonaws.com.cn."""
    return f"{prefix}.{region}.{partition(region)[1]}"


FAKE_EKS_ID = "0123456789ABCDEF0123456789ABCDEF"
FAKE_NAME_SUFFIX = "a1b2c3d"
# The provider's unique suffix for a name prefix: a timestamp and a counter, 26 characters.
FAKE_UNIQUE_SUFFIX = "20260101000000000000000001"


def _auto_name(name: str, inputs: dict[str, Any]) -> str:
    return str(inputs.get("name") or f"{name}-{FAKE_NAME_SUFFIX}")


def _node_group_name(name: str, inputs: dict[str, Any]) -> str:
    return inputs.get("nodeGroupName") or f"{inputs.get('nodeGroupNamePrefix', name)}{FAKE_UNIQUE_SUFFIX}"
FAKE_GENERATED_PASSWORD = "generated-password-that-must-stay-secret"
FAKE_REFERENCED_CLUSTER = "llm-referenced"

# Outputs that real providers compute and that the program reads back, by resource type: each a function of
# the resource's name, its inputs and the stack's region (us-west-2 where a test names none).
FAKE_STATE: dict[str, Callable[..., dict[str, Any]]] = {
    # EKS names the region before `eks` in the API server's host and after it in the OIDC issuer's.
    "aws:eks/cluster:Cluster": lambda name, inputs, region=DEFAULT_REGION: {
        "endpoint": f"https://{FAKE_EKS_ID}.gr7.{region}.eks.{partition(region)[1]}",
        "certificateAuthority": {"data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="},
        "identities": [{"oidcs": [{"issuer": f"https://oidc.{_host('eks', region)}/id/{FAKE_EKS_ID}"}]}],
        "vpcConfig": {**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": "sg-0eks0cluster0000"},
    },
    "aws:eks/nodeGroup:NodeGroup": lambda name, inputs, region=DEFAULT_REGION: {"nodeGroupName": _node_group_name(name, inputs)},
    # Pulumi's auto-name: the resource name and a random suffix.
    "aws:ec2/placementGroup:PlacementGroup": lambda name, inputs, region=DEFAULT_REGION: {"name": _auto_name(name, inputs)},
    "aws:iam/role:Role": lambda name, inputs, region=DEFAULT_REGION: {"name": _auto_name(name, inputs)},
    "aws:cloudwatch/eventRule:EventRule": lambda name, inputs, region=DEFAULT_REGION: {"name": _auto_name(name, inputs)},
    "aws:sqs/queue:Queue": lambda name, inputs, region=DEFAULT_REGION: {
        "name": _auto_name(name, inputs),
        "url": f"https://{_host('sqs', region)}/{FAKE_ACCOUNT}/{_auto_name(name, inputs)}",
    },
    "aws:kms/key:Key": lambda name, inputs, region=DEFAULT_REGION: {
        "arn": _fake_arn("aws:kms/key:Key", "key/0a1b2c3d-0000-4000-8000-0123456789ab", region)
    },
    "aws:ec2/launchTemplate:LaunchTemplate": lambda name, inputs, region=DEFAULT_REGION: {"latestVersion": 1},
    # S3 ARNs name neither the region nor the account.
    "aws:s3/bucket:Bucket": lambda name, inputs, region=DEFAULT_REGION: {
        "bucket": _auto_name(name, inputs),
        "arn": f"arn:{partition(region)[0]}:s3:::{_auto_name(name, inputs)}",
    },
    "aws:secretsmanager/secret:Secret": lambda name, inputs, region=DEFAULT_REGION: {
        "arn": _fake_arn(
            "aws:secretsmanager/secret:Secret", f"secret:{inputs.get('namePrefix', name)}{FAKE_UNIQUE_SUFFIX}-AbCdEf", region
        )
    },
    # The account whose private registry holds the cache.
    "aws:ecr/pullThroughCacheRule:PullThroughCacheRule": lambda name, inputs, region=DEFAULT_REGION: {"registryId": FAKE_ACCOUNT},
    # What the AWS Load Balancer Controller writes on a LoadBalancer Service once its NLB exists.
    "kubernetes:core/v1:Service": lambda name, inputs, region=DEFAULT_REGION: (
        {"status": {"loadBalancer": {"ingress": [{"hostname": f"k8s-{name[:20]}-{FAKE_NAME_SUFFIX}.{_host('elb', region)}"}]}}}
        if (inputs.get("spec") or {}).get("type") == "LoadBalancer"
        else {}
    ),
    "random:index/randomPassword:RandomPassword": lambda name, inputs, region=DEFAULT_REGION: {"result": FAKE_GENERATED_PASSWORD},
    # The outputs a cluster stack of this program gives (README, "Stack outputs").
    "pulumi:pulumi:StackReference": lambda name, inputs, region=DEFAULT_REGION: {
        "outputs": {"kubeconfig": "apiVersion: v1\nkind: Config\n", "clusterName": FAKE_REFERENCED_CLUSTER},
        "secretOutputNames": ["kubeconfig"],
    },
}
# EKS add-on versions that are the default for Kubernetes 1.34 (kube-proxy follows the minor instead).
FAKE_DEFAULT_ADDON_VERSIONS = {
    "vpc-cni": "v1.20.4-eksbuild.1",
    "coredns": "v1.12.3-eksbuild.1",
    "eks-pod-identity-agent": "v1.3.9-eksbuild.3",
    "aws-ebs-csi-driver": "v1.50.1-eksbuild.1",
    "metrics-server": "v0.8.0-eksbuild.3",
}


class ProviderError(grpc.RpcError):
    """A provider function's failure as the engine reports it to the program: a gRPC error with details."""

    def __init__(self, details: str):
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        return self._details


# Add-ons for which AWS marks no version as the default; a test sets it to try the fallback.
ADDONS_WITHOUT_DEFAULT: frozenset[str] = frozenset()
# How the provider words that answer; a test varies its case, which the program must not depend on.
NO_DEFAULT_WORDING = "empty result"


def fake_addon_version(addon: str, kubernetes_version: str, most_recent: bool) -> str:
    """What getAddonVersion answers: the default build, or a newer one when most_recent asks for it."""
    version = f"v{kubernetes_version}.0-eksbuild.1" if addon == "kube-proxy" else FAKE_DEFAULT_ADDON_VERSIONS[addon]
    return version.replace("eksbuild.", "eksbuild.9") if most_recent else version


def fake_subnet_zone(region: str, subnet_id: str) -> str:
    """An existing subnet lies in the zone its id ends with (subnet-...b -> <region>b); the region's a otherwise."""
    return f"{region}{subnet_id[-1]}" if subnet_id[-1] in "abcdef" else f"{region}a"


def partition(region: str) -> tuple[str, str]:
    """The partition of a region and its DNS suffix."""
    if region.startswith("cn-"):
        return "aws-cn", "amazonaws.com.cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov", "amazonaws.com"
    return "aws", "amazonaws.com"


class FakeAws:
    """Answers to the provider functions (data sources) the program invokes, for the stack's own region, from
    the dated offerings table in tools/offerings.py."""

    def __init__(self, region: str):
        self.region = region

    def _known(self) -> None:
        if self.region not in offerings.REGION_ZONES:
            raise KeyError(
                f"the offline render knows no zones of region {self.region!r}; it knows {', '.join(sorted(offerings.REGION_ZONES))}"
            )

    def availability_zones(self, args: dict[str, Any]) -> dict[str, Any]:
        self._known()
        zones = offerings.zones(self.region)
        return {"names": [n for n, _ in zones], "zoneIds": [i for _, i in zones], "state": "available"}

    def instance_type_offerings(self, args: dict[str, Any]) -> dict[str, Any]:
        self._known()
        wanted = {v for f in args.get("filters", []) if f["name"] == "instance-type" for v in f["values"]}
        offered = offerings.offered_by_name(self.region)
        pairs = [(t, zone) for zone, types in sorted(offered.items()) for t in sorted(types) if t in wanted]
        return {
            "id": self.region,
            "instanceTypes": [t for t, _ in pairs],
            "locations": [zone for _, zone in pairs],
            "locationTypes": ["availability-zone"] * len(pairs),
        }

    def addon_version(self, args: dict[str, Any]) -> dict[str, Any]:
        addon, kubernetes_version, most_recent = args["addonName"], args["kubernetesVersion"], bool(args.get("mostRecent"))
        if addon in ADDONS_WITHOUT_DEFAULT and not most_recent:
            # The provider's own words (terraform-provider-aws, aws_eks_addon_version) when none is the default.
            raise ProviderError(f"reading EKS Add-On version info ({addon}, {kubernetes_version}): {NO_DEFAULT_WORDING}")
        version = fake_addon_version(addon, kubernetes_version, most_recent)
        return {"addonName": addon, "kubernetesVersion": kubernetes_version, "version": version}

    def answer(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        name, suffix = partition(self.region)
        answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "aws:index/getPartition:getPartition": lambda a: {"partition": name, "dnsSuffix": suffix},
            "aws:index/getRegion:getRegion": lambda a: {"name": self.region, "region": self.region},
            "aws:iam/getSessionContext:getSessionContext": lambda a: {
                "arn": a.get("arn", ""),
                "issuerArn": a.get("arn", ""),
                "issuerName": a.get("arn", "").rpartition("/")[2],
            },
            "aws:index/getAvailabilityZones:getAvailabilityZones": self.availability_zones,
            "aws:eks/getAddonVersion:getAddonVersion": self.addon_version,
            "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": self.instance_type_offerings,
            "aws:ec2/getSubnet:getSubnet": lambda a: {"id": a["id"], "availabilityZone": fake_subnet_zone(self.region, a["id"])},
        }
        found = answers.get(token)
        return found(args) if found else {}


# Who runs the program when a test or the render names no one; an account of AWS's documentation.
DEFAULT_CALLER = "arn:aws:iam::123456789012:user/render"
CALLER_IDENTITY = "aws:index/getCallerIdentity:getCallerIdentity"


class RecordingMocks(pulumi_mocks.Mocks):
    def __init__(self, caller_arn: str, region: str):
        self.caller_arn = caller_arn
        self.aws = FakeAws(region)
        # Every provider function the program invoked, by token: what a preview asks AWS.
        self.calls: list[str] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[Optional[str], dict[str, Any]]:
        state = dict(args.inputs)
        region = self.aws.region
        fake = FAKE_STATE.get(args.typ)
        if fake is not None:
            state.update(fake(args.name, args.inputs, region))
        if args.typ.startswith("aws:"):
            # Of the physical name where the provider makes one (a queue's, a role's), as AWS's ARN is: a policy
            # naming the queue's ARN and a chart naming its name then disagree here as they would there.
            physical = state.get("name") if isinstance(state.get("name"), str) else args.name
            state.setdefault("arn", _fake_arn(args.typ, arn_resource_name(args.typ, physical, state), region))
        return f"{args.name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.calls.append(args.token)
        if args.token == CALLER_IDENTITY:
            return {"accountId": self.caller_arn.split(":")[4], "arn": self.caller_arn, "userId": "AIDARENDER"}, []
        return self.aws.answer(args.token, args.args), []


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi_mocks.Mocks):
        super().__init__(mocks)
        self.records: list[RecordedResource] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.records.append(
                RecordedResource(
                    type=request.type,
                    name=request.name,
                    parent=_short_urn(request.parent),
                    provider=request.provider or None,
                    custom=bool(request.custom),
                    dependencies=[d for d in (_short_urn(u) for u in request.dependencies) if d],
                    inputs=mask_secrets(rpc.deserialize_properties(request.object)),
                    ignore_changes=tuple(request.ignoreChanges),
                    protect=bool(request.protect),
                )
            )
        return response


def program_log() -> logging.Logger:
    """Where the program's pulumi.log messages go under mocks: stderr, as `pulumi preview` shows them."""
    logger = logging.getLogger("vllm-platform.program")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)  # pulumi preview prints its info diagnostics too
        logger.propagate = False
    return logger


def install(
    project: str, stack: str, config: dict[str, str], secret_keys: list[str], caller_arn: str = DEFAULT_CALLER
) -> RecordingMonitor:
    """Point the Pulumi runtime at a fresh recording monitor with this stack's config, run by caller_arn."""
    pulumi.runtime.settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_all_config(config, secret_keys)
    monitor = RecordingMonitor(RecordingMocks(caller_arn, config.get("aws:region", DEFAULT_REGION)))
    pulumi.runtime.set_mocks(
        monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor, logger=program_log()
    )
    return monitor
