"""The observability and autoscaling layer: kube-prometheus-stack, KEDA, GPU metrics, dashboard and alerts."""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components.config import PlatformConfig

# kube-prometheus-stack's Prometheus service when the release is named "kube-prometheus-stack" in "monitoring".
DEFAULT_PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090"


class Observability(pulumi.ComponentResource):
    """Contract: `prometheus_url` is what every model's KEDA trigger queries; `crd_dependencies`
    are the releases that install the CRDs of ServiceMonitor, PrometheusRule and ScaledObject;
    `outputs` are the stack outputs this layer owns."""

    prometheus_url: pulumi.Output[str]
    crd_dependencies: list[pulumi.Resource]
    outputs: dict[str, Any]

    def __init__(self, name: str, cfg: PlatformConfig, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("vllm-platform:index:Observability", name, None, opts)
        self.prometheus_url = pulumi.Output.from_input(
            cfg.observability.external_prometheus_url or DEFAULT_PROMETHEUS_URL
        )
        self.crd_dependencies = []
        self.outputs = {}
        self.register_outputs(self.outputs)
