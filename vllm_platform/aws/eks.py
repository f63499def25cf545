"""The EKS control plane's pure parts: who it admits, how it is reached, what its resources are tagged with."""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from vllm_platform.config.cluster import Cluster

CONTROL_PLANE_LOGS = ["api", "audit", "authenticator"]
# Audit logs of a busy cluster run to gigabytes a day; EKS's own log group would keep them forever.
CONTROL_PLANE_LOG_RETENTION_DAYS = 90
KMS_DELETION_WINDOW_DAYS = 30
# Access policies by role: who runs `pulumi up`, and who only reads (`pulumi preview` in PR checks, on-call).
# Viewers read Secrets too: Helm keeps its releases in Secrets, and a preview diffs the Secrets it manages.
ACCESS_POLICIES = {"admin": "AmazonEKSClusterAdminPolicy", "viewer": "AmazonEKSAdminViewPolicy"}
CLUSTER_POLICIES = ("AmazonEKSClusterPolicy",)
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryPullOnly")
# Karpenter's reference node role (its getting-started template) adds Systems Manager, for sessions on a node.
KARPENTER_NODE_POLICIES = (*NODE_POLICIES, "AmazonSSMManagedInstanceCore")
EBS_CSI_POLICY = "service-role/AmazonEBSCSIDriverPolicy"
EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"


def kubeconfig(cluster_name: str, endpoint: str, certificate_authority: str, region: str) -> dict[str, Any]:
    """A kubeconfig whose user runs `aws eks get-token`: no credential is stored in it or in the state."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": certificate_authority}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "current-context": cluster_name,
        "users": [
            {
                "name": cluster_name,
                "user": {
                    "exec": {
                        "apiVersion": EXEC_API_VERSION,
                        "command": "aws",
                        "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
    }


def resource_tags(cluster: Cluster) -> dict[str, str]:
    """On every AWS resource: who owns it, for cost allocation and clean-up."""
    return {
        "vllm-platform/cluster": cluster.name,
        "pulumi:project": pulumi.get_project(),
        "pulumi:stack": pulumi.get_stack(),
    }


def access_grants(cluster: Cluster) -> list[tuple[str, str]]:
    """(access role, principal ARN) for every identity the cluster admits."""
    return [("admin", arn) for arn in cluster.admin_principal_arns] + [
        ("viewer", arn) for arn in cluster.viewer_principal_arns
    ]


def unadmitted_caller_problem(cluster: Cluster, caller: str) -> Optional[str]:
    """Why this run could not reach the cluster it manages, if the identity running it has no access entry.

    Access is what the config says, never who happens to run Pulumi: a grant that followed the caller
    would move with every run by another person or CI, and a preview would plan to take it away.
    """
    if caller in cluster.admin_principal_arns or caller in cluster.viewer_principal_arns:
        return None
    return (
        f"cluster.adminPrincipalArns: {caller} runs this update but has no access to the cluster; add it there "
        f"(or, for a read-only preview identity, to cluster.viewerPrincipalArns)"
    )


def principal_slug(arn: str) -> str:
    """'arn:aws:iam::123:role/ci/deployer' -> '123-role/ci/deployer': a stable resource name per principal.

    The account and the whole path stay in: the same role name in two accounts, or role/ci-x next to
    role/ci/x, would otherwise share a name.
    """
    _, _, _, _, account, resource = arn.split(":", 5)
    return f"{account}-{resource}"
