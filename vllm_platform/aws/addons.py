"""EKS managed add-ons, and the IAM roles controllers get through EKS Pod Identity."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from vllm_platform.aws import iam
from vllm_platform.names import IAM_ROLE, logical_name

# DaemonSets that a node needs to become Ready (networking, service routing, and credentials for
# the pods that follow): installed before any node group. The rest need nodes to run on.
ADDONS_BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
# metrics-server (an EKS community add-on) serves the CPU metrics an autoscaling.mode hpa-cpu HPA scales on.
ADDONS_AFTER_NODES = ("coredns", "aws-ebs-csi-driver", "metrics-server")
# The VPC CNI leaves NetworkPolicies unenforced unless asked; the models' default-deny relies on them.
# Its agent admits the node's own address, so kubelet's probes still reach the pods.
ADDON_CONFIGURATION: dict[str, dict[str, str]] = {"vpc-cni": {"enableNetworkPolicy": "true"}}
# How the provider's error reads when no version of the add-on is the default for the minor, matched without
# case: the wording is the provider's (tfresource's "empty result"), not a contract, and its case has no meaning.
NO_DEFAULT_VERSION = "empty result"


def addon_version(name: str, kubernetes_version: str) -> str:
    """The version EKS marks as the default for the cluster's minor, or, where it marks none (a community
    add-on may have no default), the most recent one for that minor.

    The default, not the newest build: without a version an add-on stays where it was installed when the
    control plane is upgraded, and kube-proxy and coredns must follow the minor. A preview shows the change
    when kubernetesVersion, or AWS's default, moves. The provider answers a lookup that finds no default
    with "empty result" (terraform-provider-aws, aws_eks_addon_version); anything else is a real failure."""
    try:
        return aws.eks.get_addon_version(addon_name=name, kubernetes_version=kubernetes_version, most_recent=False).version
    except Exception as error:  # the SDK raises a bare Exception for a failed invoke
        if NO_DEFAULT_VERSION not in str(error).lower():
            raise
    version = aws.eks.get_addon_version(addon_name=name, kubernetes_version=kubernetes_version, most_recent=True).version
    pulumi.log.info(
        f"EKS add-on {name}: AWS marks no default version for Kubernetes {kubernetes_version}; using the most recent, {version}"
    )
    return version


def eks_addon(
    name: str,
    cluster_name: pulumi.Input[str],
    kubernetes_version: str,
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.eks.Addon:
    version = addon_version(name, kubernetes_version)
    configuration = ADDON_CONFIGURATION.get(name)
    return aws.eks.Addon(
        name,
        cluster_name=cluster_name,
        addon_name=name,
        addon_version=version,
        configuration_values=json.dumps(configuration) if configuration else None,
        resolve_conflicts_on_create="OVERWRITE",
        resolve_conflicts_on_update="OVERWRITE",
        tags=tags,
        opts=opts,
    )


def pod_identity_role(
    name: str,
    cluster_name: pulumi.Input[str],
    namespace: str,
    service_account: str,
    tags: dict[str, str],
    parent: pulumi.Resource,
) -> tuple[aws.iam.Role, aws.eks.PodIdentityAssociation]:
    """An IAM role that only pods of this service account in this cluster receive."""
    role = aws.iam.Role(
        logical_name(IAM_ROLE, name),
        description=f"EKS Pod Identity: {namespace}/{service_account}",
        path=iam.ROLE_PATH,
        assume_role_policy=json.dumps(iam.service_trust_policy(iam.POD_IDENTITY_SERVICE)),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    association = aws.eks.PodIdentityAssociation(
        name,
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.arn,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return role, association


def service_role(
    name: str, service: str, policies: tuple[str, ...], partition: str, tags: dict[str, str], parent: pulumi.Resource
) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
    """A role an AWS service assumes (EKS, or EC2 for nodes), with AWS managed policies attached."""
    opts = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        logical_name(IAM_ROLE, name),
        path=iam.ROLE_PATH,
        assume_role_policy=json.dumps(iam.service_trust_policy(service)),
        tags=tags,
        opts=opts,
    )
    attachments = [
        aws.iam.RolePolicyAttachment(
            f"{name}-{policy}", role=role.name, policy_arn=iam.managed_policy_arn(partition, policy), opts=opts
        )
        for policy in policies
    ]
    return role, attachments
