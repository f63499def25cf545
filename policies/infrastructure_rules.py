"""The pack's rules for the AWS and cluster resources under the workloads: nodes, the control plane, Helm releases.

Pure functions of what the engine hands a resource policy, as in rules.py, which lists them among its RULES.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from pulumi_policy import ReportViolation, ResourceValidationArgs

from props import HELM_RELEASE, NODE_CLASS, NODE_POOL, describe, dig, items, number
from vllm_platform.contract import (
    CONSOLIDATE_WHEN_EMPTY,
    GPU_RESOURCE,
    GPU_TAINT,
    IMDS_HOP_LIMIT,
    INSTANCE_GPU_COUNT_LABEL,
    INSTANCE_TYPE_LABEL,
)

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
# The EC2 families with GPUs (the EC2 User Guide's accelerated computing instances): G (g4dn, g4ad, g5, g5g, g6, g6e,
# g6f), Gr (gr6, gr6f: L4 with more memory per vCPU) and P (p4d, p4de, p5, p5e, p5en, p6-b200, p6e-gb200), whatever
# generation and attributes follow; no other family's name starts with g, gr or p and a generation.
GPU_FAMILY = re.compile(r"(gr?|p)[0-9][a-z0-9-]*\.[a-z0-9-]+")
# A single release, as Helm reads `version`; anything else (^1.2, ~1.2.3, >=1, 1.x, 1.2, empty) is a
# constraint Helm resolves again, to the newest match, on every install.
EXACT_CHART_VERSION = re.compile(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


def check_imdsv2(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # IMDSv1 answers a single forged GET: one request forgery in any pod hands out the node role's credentials.
    if args.resource_type not in (LAUNCH_TEMPLATE, NODE_GROUP):
        return 0
    where = describe(args.resource_type, args.props, args.name)
    if args.resource_type == LAUNCH_TEMPLATE:
        tokens = dig(args.props, "metadataOptions", "httpTokens")
        if tokens != "required":
            report(f"{where}: metadataOptions.httpTokens is {repr(tokens) if tokens else 'not set'}; set it to 'required'")
        return 1
    template = args.props.get("launchTemplate")
    # Its id is unknown at preview while the template is created in the same stack: only keys are read.
    if not isinstance(template, Mapping) or not {"id", "name"} & set(template):
        report(
            f"{where}: no launchTemplate; without one EKS launches the nodes from a template of its own, "
            "which this pack cannot check; give it a launch template whose metadataOptions.httpTokens is 'required'"
        )
    return 1


def check_eks_secrets_encryption(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # A key of the account's own puts who may decrypt Secrets (the Hugging Face token) under its key policy and audit.
    if args.resource_type != EKS_CLUSTER:
        return 0
    where = describe(args.resource_type, args.props, args.name)
    config = args.props.get("encryptionConfig")
    if not isinstance(config, Mapping):
        report(f"{where}: no encryptionConfig; set encryptionConfig with resources ['secrets'] and provider.keyArn of a KMS key")
        return 1
    if "secrets" not in items(config.get("resources")):
        report(f"{where}: encryptionConfig.resources does not include 'secrets'; set it to ['secrets']")
    provider = config.get("provider")
    # A key created in the same stack has no ARN yet at preview: that it is set is what counts, so only keys are read.
    if not isinstance(provider, Mapping) or "keyArn" not in set(provider):
        report(f"{where}: no encryptionConfig.provider.keyArn; set it to the ARN of a KMS key")
    return 1


def check_helm_charts_pinned(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # Helm renders a release's objects inside the provider, where neither this pack nor checkov sees
    # them: what they run is the chart's own. An exact version from a named repository makes every
    # change to them a change to this stack, reviewed in its preview.
    if args.resource_type != HELM_RELEASE:
        return 0
    where, chart = describe(args.resource_type, args.props, args.name), args.props.get("chart")
    version, repository = args.props.get("version"), dig(args.props, "repositoryOpts", "repo")
    if not isinstance(version, str) or not EXACT_CHART_VERSION.fullmatch(version):
        shown = repr(version) if version else "not set"
        report(f"{where}: chart {chart!r} version is {shown}; pin one release, such as 1.2.3, never a range or the latest")
    oci = isinstance(chart, str) and chart.startswith("oci://")
    if not oci and (not isinstance(repository, str) or not repository):
        report(
            f"{where}: chart {chart!r} has no repositoryOpts.repo; name the chart repository it is installed from, or "
            "give the chart as an OCI reference (oci://registry/path/chart)"
        )
    return 1


def requirement(requirements: Sequence[Any], key: str) -> Optional[Mapping[str, Any]]:
    return next((r for r in requirements if isinstance(r, Mapping) and r.get("key") == key), None)


def carries_gpus(pool: Mapping[str, Any]) -> bool:
    """Whether a NodePool may launch GPU instances: unless its requirements rule every GPU type out."""
    requirements = items(dig(pool, "spec", "template", "spec", "requirements"))
    gpu_count = requirement(requirements, INSTANCE_GPU_COUNT_LABEL)
    if gpu_count is not None and gpu_count.get("operator") == "DoesNotExist":
        return False
    types = requirement(requirements, INSTANCE_TYPE_LABEL)
    if types is not None and types.get("operator") == "In":
        return any(GPU_FAMILY.fullmatch(str(t)) for t in items(types.get("values")))
    return True


def check_gpu_node_pools(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # A NodePool is what a GPU bill grows from: without a GPU limit it launches as many as pods ask for, without
    # the taint any pod lands on a GPU node, and consolidation would evict a serving model mid-request to repack.
    if args.resource_type != NODE_POOL or not carries_gpus(args.props):
        return 0
    where = describe(args.resource_type, args.props, args.name)
    if dig(args.props, "spec", "limits", GPU_RESOURCE) is None:
        report(f"{where}: no spec.limits['{GPU_RESOURCE}']; cap the GPUs it may launch")
    taints = items(dig(args.props, "spec", "template", "spec", "taints"))
    if not any(isinstance(t, Mapping) and t.get("key") == GPU_TAINT.key and t.get("effect") == GPU_TAINT.effect for t in taints):
        report(f"{where}: no {GPU_TAINT.key}:{GPU_TAINT.effect} taint; only pods that ask for GPUs may land on its nodes")
    policy = dig(args.props, "spec", "disruption", "consolidationPolicy")
    budgets = items(dig(args.props, "spec", "disruption", "budgets"))
    # A budget with a schedule holds only inside its window; repacking resumes outside it.
    no_repacking = any(
        isinstance(b, Mapping) and str(b.get("nodes")) == "0" and "Underutilized" in items(b.get("reasons")) and not b.get("schedule")
        for b in budgets
    )
    if policy != CONSOLIDATE_WHEN_EMPTY and not no_repacking:
        report(
            f"{where}: consolidationPolicy is {repr(policy) if policy else 'not set (WhenEmptyOrUnderutilized)'}; set it "
            f"to {CONSOLIDATE_WHEN_EMPTY}, or give a budget of nodes '0' for reason Underutilized, with no schedule, so serving nodes are never repacked"
        )
    return 1


def check_node_classes(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # As for launch templates: IMDSv2 with a hop limit of 1 keeps pods from the node role, and every EBS volume is
    # encrypted with a key of the account's, whatever it holds.
    if args.resource_type != NODE_CLASS:
        return 0
    where = describe(args.resource_type, args.props, args.name)
    options = dig(args.props, "spec", "metadataOptions") or {}
    if options.get("httpTokens") != "required":
        report(f"{where}: metadataOptions.httpTokens is {repr(options.get('httpTokens')) if options.get('httpTokens') else 'not set'}; set it to 'required'")
    if number(options.get("httpPutResponseHopLimit")) != IMDS_HOP_LIMIT:
        report(
            f"{where}: metadataOptions.httpPutResponseHopLimit is not {IMDS_HOP_LIMIT}; set it to {IMDS_HOP_LIMIT} so that pods "
            "cannot reach instance metadata"
        )
    mappings = items(dig(args.props, "spec", "blockDeviceMappings"))
    if not mappings:
        report(f"{where}: no blockDeviceMappings; give the root volume with ebs.encrypted true")
    for mapping in mappings:
        if dig(mapping, "ebs", "encrypted") is not True:
            report(f"{where}: volume {dig(mapping, 'deviceName') or '?'} is not encrypted; set ebs.encrypted true")
    return 1

