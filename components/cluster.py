"""The cluster layer: an EKS cluster with GPU node pools, or an existing cluster; and the provider for it."""

from __future__ import annotations

from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from components.config import PlatformConfig


class PlatformCluster(pulumi.ComponentResource):
    """Contract: `provider` is the kubernetes.Provider every Kubernetes resource goes through;
    `ready` lists what must exist before workloads are created (node groups, add-ons);
    `outputs` are the stack outputs this layer owns (see README, "Stack outputs")."""

    provider: Optional[k8s.Provider]
    ready: list[pulumi.Resource]
    outputs: dict[str, Any]

    def __init__(self, name: str, cfg: PlatformConfig, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("vllm-platform:index:Cluster", name, None, opts)
        self.provider = None
        self.ready = []
        self.outputs = {"clusterName": cfg.cluster.name}
        self.register_outputs(self.outputs)
