"""The platform's one vocabulary: the names, ports, labels, taints and serving rules that the program,
the policy pack and verify share.

The policy pack imports this package from its own virtualenv, which has neither pydantic nor the
providers, and a published pack carries a copy of it (see the README, "The policy pack"): nothing here
imports outside the standard library.
"""

from __future__ import annotations

from typing import NamedTuple

PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "vllm-platform"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# Every model's pods carry NAME_LABEL: MODEL_APP; the policy pack finds model Deployments by it.
MODEL_APP = "vllm"
# Prometheus selects the monitors and rules of every namespace that carries these labels.
MONITOR_SELECTOR_LABELS = {PART_OF_LABEL: PART_OF}

# Namespaces the platform itself fills: Prometheus, Grafana and the DCGM exporter; KEDA and its HTTP add-on.
MONITORING_NAMESPACE = "monitoring"
KEDA_NAMESPACE = "keda"
# The models' one door: Envoy Gateway, its proxies and the rate-limit store; AI Gateway's controller; the Gateway,
# its routes, keys and policies.
GATEWAY_NAMESPACE = "envoy-gateway-system"
AI_GATEWAY_NAMESPACE = "envoy-ai-gateway-system"
GATEWAY_ROUTES_NAMESPACE = "llm-gateway"
KUBE_SYSTEM = "kube-system"
RESERVED_NAMESPACES = (
    MONITORING_NAMESPACE, KEDA_NAMESPACE, GATEWAY_NAMESPACE, AI_GATEWAY_NAMESPACE, GATEWAY_ROUTES_NAMESPACE, KUBE_SYSTEM,
    "kube-public", "kube-node-lease",
)  # fmt: skip
# Kubernetes' limit on a DNS label, which every object, namespace and label value here is.
LABEL_MAX_LENGTH = 63

# The node contract: every node of GPU pool P carries GPU_POOL_LABEL: P and NODE_TYPE_LABEL: GPU_NODE and
# the GPU taint; system nodes carry NODE_TYPE_LABEL: SYSTEM_NODE and no taint.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_POOL_LABEL = "gpu-pool"
NODE_TYPE_LABEL = "node-type"
GPU_NODE = "gpu"
SYSTEM_NODE = "system"
GPU_NODE_SELECTOR = {NODE_TYPE_LABEL: GPU_NODE}
SYSTEM_NODE_SELECTOR = {NODE_TYPE_LABEL: SYSTEM_NODE}


class Taint(NamedTuple):
    key: str
    value: str
    effect: str

    def manifest(self) -> dict[str, str]:
        return self._asdict()

    def toleration(self) -> dict[str, str]:
        """Tolerates exactly this taint, as a workload pinned to these nodes should."""
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}

    def any_value_toleration(self) -> dict[str, str]:
        """Tolerates the taint whatever its value, as a DaemonSet of every such node should."""
        return {"key": self.key, "operator": "Exists", "effect": self.effect}


GPU_TAINT = Taint(GPU_RESOURCE, "true", "NoSchedule")
# Every node, system or GPU: IMDSv2 with a hop limit of 1, so only the node itself and host-network pods (the
# VPC CNI) reach instance metadata and no pod, vLLM running a checkpoint's custom code included, borrows the
# node role; the controllers get their own roles through Pod Identity. The root volume is the AMI's device.
IMDS_HOP_LIMIT = 1
ROOT_DEVICE = "/dev/xvda"
# Karpenter launches the GPU nodes: its controller's ServiceAccount, and the tag by which every EC2NodeClass
# finds the cluster's private subnets and security group.
KARPENTER_SERVICE_ACCOUNT = "karpenter"
KARPENTER_DISCOVERY_TAG = "karpenter.sh/discovery"
# The AWS Load Balancer Controller makes the gateway's NLB: its ServiceAccount, which its Pod Identity role names.
LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"

# The serving contract of every model, vLLM or the simulator: one named port; vLLM opens it only once
# weights, KV cache and CUDA graphs are ready, and lists the model on READINESS_PATH from then on.
SERVING_PORT = 8000
# The serving container's name, which kube-state-metrics' container series (the crash-loop alert) select on.
SERVING_CONTAINER = "vllm"
SERVING_PORT_NAME = "http"
READINESS_PATH = "/v1/models"
LIVENESS_PATH = "/health"
METRICS_PATH = "/metrics"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# How often the startup probe asks: a model's start budget is a whole number of these.
STARTUP_PROBE_PERIOD_SECONDS = 10
# A model that scales to zero gives its name to the interceptor's entry point; its pods' Service takes this suffix.
BACKEND_SERVICE_SUFFIX = "-backend"

# vLLM's server: its image, whose entrypoint is `vllm serve`, and the module that command runs.
VLLM_IMAGE_NAME = "vllm-openai"
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
SERVE_COMMAND = ("vllm", "serve")

# NCCL passes tensors between a model's GPU workers through /dev/shm, whose runtime default is 64 MiB.
SHM_PATH = "/dev/shm"

# The gateway: the Gateway object, which names its proxies' Service; the header in which Envoy forwards the
# client a key belongs to (its metrics label and rate-limit bucket); the header AI Gateway puts the body's
# `model` in, which the routes match; and the Secret of the clients' keys.
GATEWAY_NAME = "llm-gateway"
CLIENT_ID_HEADER = "x-client-id"
MODEL_HEADER = "x-ai-eg-model"
GATEWAY_KEYS_SECRET = "gateway-api-keys"
# A client's key, as OpenAI clients send it after `Bearer `: long enough not to be guessed, and so that the
# policy pack can look for it in other resources without matching short everyday strings.
API_KEY_LENGTHS = (32, 256)

HF_TOKEN_SECRET = "hf-token"
HF_TOKEN_SECRET_KEY = "token"
HF_TOKEN_DIR = "/var/run/secrets/huggingface"
# huggingface_hub reads the token from the file this names; the variables below would carry it as a value.
HF_TOKEN_PATH_VARIABLE = "HF_TOKEN_PATH"
HF_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN")


def needs_shared_memory(tensor_parallel_size: float) -> bool:
    """Whether a vLLM pod needs a memory-backed /dev/shm: more than one GPU worker exchanging tensors."""
    return tensor_parallel_size > 1


def minimum_grace_seconds(prestop_seconds: float, shutdown_timeout_seconds: float) -> float:
    """The least terminationGracePeriodSeconds that lets a pod drain: the preStop hold while endpoints stop
    routing to it, then vLLM's --shutdown-timeout for the requests it accepted. Shorter, the kubelet kills it
    with requests still in flight."""
    return prestop_seconds + shutdown_timeout_seconds


class Kind(NamedTuple):
    """A Kubernetes kind the program makes and the policy pack checks: one place for its API version."""

    api_version: str
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def pulumi_type(self) -> str:
        """pulumi-kubernetes' type token: `kubernetes:<group>/<version>:<kind>`, the core group spelt `core`."""
        return f"kubernetes:{self.group or 'core'}/{self.version}:{self.kind}"


ENVOY_GATEWAY_API = "gateway.envoyproxy.io/v1alpha1"
AI_GATEWAY_API = "aigateway.envoyproxy.io/v1beta1"
NODE_POOL = Kind("karpenter.sh/v1", "NodePool")
# The well-known node labels a NodePool's requirements select on, and the consolidation policy that never repacks a
# serving node (Karpenter v1): the program writes them, the pack checks them.
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"
INSTANCE_GPU_COUNT_LABEL = "karpenter.k8s.aws/instance-gpu-count"
CONSOLIDATE_WHEN_EMPTY = "WhenEmpty"
NODE_CLASS = Kind("karpenter.k8s.aws/v1", "EC2NodeClass")
SCALED_OBJECT = Kind("keda.sh/v1alpha1", "ScaledObject")
HORIZONTAL_POD_AUTOSCALER = Kind("autoscaling/v2", "HorizontalPodAutoscaler")
AI_GATEWAY_ROUTE = Kind(AI_GATEWAY_API, "AIGatewayRoute")
SECURITY_POLICY = Kind(ENVOY_GATEWAY_API, "SecurityPolicy")
ENVOY_PROXY = Kind(ENVOY_GATEWAY_API, "EnvoyProxy")
# The AWS Load Balancer Controller's Service annotations: what the program sets and the pack reads.
NLB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-"
