"""Every version the platform pins: images and Helm charts, each an exact release, with why.

Changing one is a reviewed change to every stack: the preview shows it, and the policy pack's
helm-charts-pinned holds each release to an exact chart version.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm_platform.contract import KEDA_NAMESPACE, KUBE_SYSTEM, MONITORING_NAMESPACE

# --shutdown-timeout needs v0.18.0 or newer; the CUDA 13 builds need NVIDIA driver 580+, which the EKS AL2023 NVIDIA AMI ships.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.31.0"
# llm-d's vLLM simulator: the same OpenAI API, probes and vllm: metrics, without a GPU.
SIMULATOR_IMAGE = "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2"

# The Kubernetes minors the platform supports: cluster-autoscaler supports only the minor it was
# built for (the chart's own image, appVersion 1.35.0, is right for 1.35 only), so a minor without a
# pinned image here cannot scale its GPU pools. Tags promoted to registry.k8s.io.
CLUSTER_AUTOSCALER_IMAGE_TAGS = {
    "1.32": "v1.32.5",
    "1.33": "v1.33.5",
    "1.34": "v1.34.4",
    "1.35": "v1.35.1",
    "1.36": "v1.36.0",
}
SUPPORTED_KUBERNETES_VERSIONS = tuple(CLUSTER_AUTOSCALER_IMAGE_TAGS)
DEFAULT_KUBERNETES_VERSION = "1.34"


@dataclass(frozen=True)
class Chart:
    chart: str
    version: str  # an exact release, never a range
    repository: str
    release: str
    namespace: str


# prometheus-operator v0.93 line, the same as the ServiceMonitor/PrometheusRule CRDs the tests validate against.
KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack", "88.5.0", "https://prometheus-community.github.io/helm-charts",
    "kube-prometheus-stack", MONITORING_NAMESPACE,
)  # fmt: skip
# The chart names Alertmanager's ServiceAccount after its fullnameOverride, the release name here.
ALERTMANAGER_SERVICE_ACCOUNT = f"{KUBE_PROMETHEUS_STACK.release}-alertmanager"
KEDA = Chart("keda", "2.20.2", "https://kedacore.github.io/charts", "keda", KEDA_NAMESPACE)
# The 0.15 line, the InterceptorRoute API the tests validate against; installed when a model scales to zero.
KEDA_HTTP_ADD_ON = Chart(
    "keda-add-ons-http", "0.15.0", "https://kedacore.github.io/charts", "keda-add-ons-http", KEDA_NAMESPACE
)
DCGM_EXPORTER = Chart(
    "dcgm-exporter", "4.8.2", "https://nvidia.github.io/dcgm-exporter/helm-charts", "dcgm-exporter", MONITORING_NAMESPACE
)
NVIDIA_DEVICE_PLUGIN = Chart(
    "nvidia-device-plugin", "0.20.0", "https://nvidia.github.io/k8s-device-plugin", "nvidia-device-plugin", KUBE_SYSTEM
)
CLUSTER_AUTOSCALER = Chart(
    "cluster-autoscaler", "9.59.0", "https://kubernetes.github.io/autoscaler", "cluster-autoscaler", KUBE_SYSTEM
)
