"""Pulumi mocks that record every registered resource, for the offline render and the tests.

The mock engine answers each resource with its own inputs plus the few outputs that real providers
compute (ids, ARNs, endpoints) and that the program reads back, so the real program runs unchanged.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

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
        return {"type": self.type, "name": self.name, "parent": self.parent, "inputs": self.inputs}


def _short_urn(urn: str) -> Optional[str]:
    """'urn:pulumi:dev::proj::a$b:c:D::name' -> 'b:c:D::name'; None for the stack itself."""
    if not urn:
        return None
    qualified_type, name = urn.split("::")[2], urn.split("::", 3)[3]
    resource_type = qualified_type.split("$")[-1]
    return None if resource_type == "pulumi:pulumi:Stack" else f"{resource_type}::{name}"


def _fake_arn(resource_type: str, name: str) -> str:
    service = resource_type.split(":")[1].split("/")[0]
    return f"arn:aws:{service}:us-west-2:123456789012:{name}"


FAKE_EKS_ID = "0123456789ABCDEF0123456789ABCDEF"
FAKE_NAME_SUFFIX = "a1b2c3d"
# The provider's unique suffix for a name prefix: a timestamp and a counter, 26 characters.
FAKE_UNIQUE_SUFFIX = "20260101000000000000000001"


def _node_group_name(name: str, inputs: dict[str, Any]) -> str:
    return inputs.get("nodeGroupName") or f"{inputs.get('nodeGroupNamePrefix', name)}{FAKE_UNIQUE_SUFFIX}"
FAKE_GENERATED_PASSWORD = "generated-password-that-must-stay-secret"
FAKE_REFERENCED_CLUSTER = "llm-referenced"

# Outputs that real providers compute and that the program reads back, by resource type.
FAKE_STATE: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
    "aws:eks/cluster:Cluster": lambda name, inputs: {
        "endpoint": f"https://{FAKE_EKS_ID}.gr7.us-west-2.eks.amazonaws.com",
        "certificateAuthority": {"data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="},
        "identities": [{"oidcs": [{"issuer": f"https://oidc.eks.us-west-2.amazonaws.com/id/{FAKE_EKS_ID}"}]}],
        "vpcConfig": {**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": "sg-0eks0cluster0000"},
    },
    "aws:eks/nodeGroup:NodeGroup": lambda name, inputs: {
        "nodeGroupName": _node_group_name(name, inputs),
        "resources": [{"autoscalingGroups": [{"name": f"eks-{_node_group_name(name, inputs)}-f0c7a1e2"}]}],
    },
    # Pulumi's auto-name: the resource name and a random suffix.
    "aws:ec2/placementGroup:PlacementGroup": lambda name, inputs: {"name": inputs.get("name", f"{name}-{FAKE_NAME_SUFFIX}")},
    "aws:ec2/launchTemplate:LaunchTemplate": lambda name, inputs: {"latestVersion": 1},
    "random:index/randomPassword:RandomPassword": lambda name, inputs: {"result": FAKE_GENERATED_PASSWORD},
    # The outputs a cluster stack of this program gives (README, "Stack outputs").
    "pulumi:pulumi:StackReference": lambda name, inputs: {
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


def fake_addon_version(addon: str, kubernetes_version: str, most_recent: bool) -> str:
    """What getAddonVersion answers: the default build, or a newer one when most_recent asks for it."""
    version = f"v{kubernetes_version}.0-eksbuild.1" if addon == "kube-proxy" else FAKE_DEFAULT_ADDON_VERSIONS[addon]
    return version.replace("eksbuild.", "eksbuild.9") if most_recent else version


# Where EC2 offers the catalog's GPU types in us-west-2 (for the mocks: g5 in three zones, the P
# types in fewer, p4de in none). The committed stacks' zones follow from it.
FAKE_OFFERINGS = {
    "us-west-2a": {f"g5.{size}" for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")},
    "us-west-2b": {"g5.xlarge", "g5.2xlarge", "g5.4xlarge", "g5.8xlarge", "g5.12xlarge", "g5.48xlarge", "p4d.24xlarge"},
    "us-west-2c": {"g5.xlarge", "g5.2xlarge", "g5.12xlarge", "g5.48xlarge", "p4d.24xlarge", "p5.48xlarge"},
    "us-west-2d": {"p5.48xlarge"},
}


def _instance_type_offerings(args: dict[str, Any]) -> dict[str, Any]:
    wanted = {v for f in args.get("filters", []) if f["name"] == "instance-type" for v in f["values"]}
    pairs = [(t, zone) for zone, types in sorted(FAKE_OFFERINGS.items()) for t in sorted(types) if t in wanted]
    return {
        "id": "us-west-2",
        "instanceTypes": [t for t, _ in pairs],
        "locations": [zone for _, zone in pairs],
        "locationTypes": ["availability-zone"] * len(pairs),
    }


def fake_subnet_zone(subnet_id: str) -> str:
    """An existing subnet lies in the zone its id ends with (subnet-0b -> us-west-2b); us-west-2a otherwise."""
    return f"us-west-2{subnet_id[-1]}" if subnet_id[-1] in "abcd" else "us-west-2a"


# Answers to provider functions (data sources) the program invokes, by function token.
FAKE_CALLS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "aws:index/getPartition:getPartition": lambda args: {"partition": "aws", "dnsSuffix": "amazonaws.com"},
    "aws:index/getRegion:getRegion": lambda args: {"name": "us-west-2", "region": "us-west-2"},
    "aws:iam/getSessionContext:getSessionContext": lambda args: {
        "arn": args.get("arn", ""),
        "issuerArn": args.get("arn", ""),
        "issuerName": args.get("arn", "").rpartition("/")[2],
    },
    "aws:index/getAvailabilityZones:getAvailabilityZones": lambda args: {
        "names": ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"],
        "zoneIds": ["usw2-az1", "usw2-az2", "usw2-az3", "usw2-az4"],
        "state": "available",
    },
    "aws:eks/getAddonVersion:getAddonVersion": lambda args: {
        "addonName": args["addonName"],
        "kubernetesVersion": args["kubernetesVersion"],
        "version": fake_addon_version(args["addonName"], args["kubernetesVersion"], bool(args.get("mostRecent"))),
    },
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": _instance_type_offerings,
    "aws:ec2/getSubnet:getSubnet": lambda args: {"id": args["id"], "availabilityZone": fake_subnet_zone(args["id"])},
    "aws:iam/getPolicyDocument:getPolicyDocument": lambda args: {
        "json": json.dumps({"Version": "2012-10-17", "Statement": args.get("statements", [])})
    },
}


# Who runs the program when a test or the render names no one; an account of AWS's documentation.
DEFAULT_CALLER = "arn:aws:iam::123456789012:user/render"
CALLER_IDENTITY = "aws:index/getCallerIdentity:getCallerIdentity"


class RecordingMocks(pulumi_mocks.Mocks):
    def __init__(self, caller_arn: str):
        self.caller_arn = caller_arn

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[Optional[str], dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ.startswith("aws:"):
            state.setdefault("arn", _fake_arn(args.typ, args.name))
        fake = FAKE_STATE.get(args.typ)
        if fake is not None:
            state.update(fake(args.name, args.inputs))
        return f"{args.name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == CALLER_IDENTITY:
            return {"accountId": self.caller_arn.split(":")[4], "arn": self.caller_arn, "userId": "AIDARENDER"}, []
        answer = FAKE_CALLS.get(args.token)
        return (answer(args.args) if answer else {}), []


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
        logger.propagate = False
    return logger


def install(
    project: str, stack: str, config: dict[str, str], secret_keys: list[str], caller_arn: str = DEFAULT_CALLER
) -> RecordingMonitor:
    """Point the Pulumi runtime at a fresh recording monitor with this stack's config, run by caller_arn."""
    pulumi.runtime.settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_all_config(config, secret_keys)
    monitor = RecordingMonitor(RecordingMocks(caller_arn))
    pulumi.runtime.set_mocks(
        monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor, logger=program_log()
    )
    return monitor
