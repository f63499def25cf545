"""Every version the platform pins: images and Helm charts, each an exact release, with why.

Changing one is a reviewed change to every stack: the preview shows it, and the policy pack's
helm-charts-pinned holds each release to an exact chart version.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm_platform.contract import AI_GATEWAY_NAMESPACE, GATEWAY_NAMESPACE, KEDA_NAMESPACE, KUBE_SYSTEM, MONITORING_NAMESPACE

# --shutdown-timeout needs v0.18.0 or newer; the CUDA 13 builds need NVIDIA driver 580+, which the EKS AL2023 NVIDIA AMI ships.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.31.0"
# llm-d's vLLM simulator: the same OpenAI API, probes and vllm: metrics, without a GPU.
SIMULATOR_IMAGE = "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2"

# The Kubernetes minors the platform supports: those Karpenter 1.14 supports (1.30 to 1.36, its compatibility
# matrix) that EKS still offers, and that the schemas the render is validated against cover.
SUPPORTED_KUBERNETES_VERSIONS = ("1.32", "1.33", "1.34", "1.35", "1.36")
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
# Karpenter launches the GPU nodes. Published as OCI charts only; the CRDs come from karpenter-crd, whose
# templates Helm upgrades with the chart (a chart's crds/ directory it installs once and never upgrades).
KARPENTER = Chart("karpenter", "1.14.1", "oci://public.ecr.aws/karpenter", "karpenter", KUBE_SYSTEM)
KARPENTER_CRD = Chart("karpenter-crd", "1.14.1", "oci://public.ecr.aws/karpenter", "karpenter-crd", KUBE_SYSTEM)
# The EKS AL2023 AMI release Karpenter's alias resolves (its NVIDIA variant for GPU types): amazon-eks-ami
# v20260714, the newest release with a published changelog listing NVIDIA AMIs for Kubernetes 1.30 to 1.36.
DEFAULT_GPU_AMI_ALIAS = "al2023@v20260714"
# The model staging Job's image: AWS Lambda's Python 3.12 base image, a dated release on ECR Public, which
# ships boto3 and nothing else the Job needs (vllm_platform/staging/stage_model.py uses the standard library
# besides). Small, so the system nodes pull it in seconds; its entrypoint is replaced by the Job's command.
STAGING_IMAGE = "public.ecr.aws/lambda/python:3.12.2026.10.03.13"
# The gateway: Envoy Gateway v1.9 (AI Gateway v1.1 needs v1.8.1 or later), which installs the Gateway API CRDs
# (v1.6) with its own; AI Gateway's CRDs from their own chart, which Helm upgrades with its templates.
ENVOY_GATEWAY = Chart("gateway-helm", "v1.9.0", "oci://docker.io/envoyproxy", "eg", GATEWAY_NAMESPACE)
AI_GATEWAY_CRDS = Chart("ai-gateway-crds-helm", "v1.1.0", "oci://docker.io/envoyproxy", "aieg-crd", AI_GATEWAY_NAMESPACE)
AI_GATEWAY = Chart("ai-gateway-helm", "v1.1.0", "oci://docker.io/envoyproxy", "aieg", AI_GATEWAY_NAMESPACE)
# The proxies' image that Envoy Gateway v1.9.0 runs by default (api/v1alpha1/shared_types.go, DefaultEnvoyProxyImage),
# named only where Docker Hub's images come through a mirror or the stack's cache; bump it with ENVOY_GATEWAY.
ENVOY_PROXY_IMAGE = "docker.io/envoyproxy/envoy:distroless-v1.39.0"
# Makes the gateway's NLB; app v3.5.0, whose iam_policy.json vllm_platform/aws/load_balancer.py follows.
AWS_LOAD_BALANCER_CONTROLLER = Chart(
    "aws-load-balancer-controller", "3.5.0", "https://aws.github.io/eks-charts", "aws-load-balancer-controller", KUBE_SYSTEM
)
# The gateway's rate-limit counters: the Redis release AI Gateway's token_ratelimit example (v1.1.0) runs, from
# ECR Public's copy of the Docker official image, clear of Docker Hub's per-IP pull limit.
RATE_LIMIT_REDIS_IMAGE = "public.ecr.aws/docker/library/redis:8.2.4-alpine3.22"
