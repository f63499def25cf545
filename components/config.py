"""The stack config: the user's interface, validated whole before any resource exists.

Keys are the camelCase names of `Pulumi.<stack>.yaml` under the `vllm-platform:` namespace.
`parse_config` turns the raw values into a `PlatformConfig` or raises one `ConfigError` that lists
every problem, each naming its key, the model or pool, the numbers and a way out.
"""

from __future__ import annotations

import ipaddress
import json
import re
from functools import cached_property
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components import sizing, vllm_args
from components.catalog import INSTANCE_TYPES, Gpu, InstanceType, allocatable_cpu_millis, allocatable_memory_mib

CONFIG_NAMESPACE = "vllm-platform"
# --shutdown-timeout needs v0.18.0 or newer; the CUDA 13 builds need NVIDIA driver 580+, which the EKS AL2023 NVIDIA AMI ships.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.31.0"
SERVING_PORT = 8000
# A model that scales to zero gives its name to the interceptor's entry point; its pods' Service takes this suffix.
BACKEND_SERVICE_SUFFIX = "-backend"
# Namespaces the platform itself fills: Prometheus, Grafana and the DCGM exporter; KEDA and its HTTP add-on.
MONITORING_NAMESPACE = "monitoring"
KEDA_NAMESPACE = "keda"
RESERVED_NAMESPACES = (MONITORING_NAMESPACE, KEDA_NAMESPACE, "kube-system", "kube-public", "kube-node-lease")
# Image pull and process start on top of a simulated model's load phase.
SIMULATED_START_MARGIN_SECONDS = 120

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
HF_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
# Served names go into argv, PromQL label matchers and the simulator's shell line: no quotes, spaces or `$`.
SERVED_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}$")
STACK_REFERENCE = re.compile(r"^[\w.-]+/[\w.-]+/[\w.-]+$")
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
QUANTIZATIONS = ("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "bitsandbytes", "compressed-tensors")

# Flags the platform sets itself from other keys; passing them again through extraArgs would
# silently override the fit checks or break the probes.
MANAGED_VLLM_FLAGS = (
    "--model",
    "--served-model-name",
    "--port",
    "--host",
    "--tensor-parallel-size",
    "--quantization",
    "--max-model-len",
    "--gpu-memory-utilization",
    "--download-dir",
    "--shutdown-timeout",
)


class ConfigError(Exception):
    """A stack config that must not deploy; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        head = f"invalid {CONFIG_NAMESPACE} stack config ({len(self.problems)} problem{'s' * (len(self.problems) > 1)}):"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )


def _check_label(value: str, pattern: re.Pattern[str], kind: str) -> str:
    if len(value) > 63 or not pattern.match(value):
        raise ValueError(f"{value!r} is not a {kind} (lower-case letters, digits and '-', at most 63 characters)")
    return value


def _namespace_names(values: list[str]) -> list[str]:
    return [_check_label(v, DNS_1123_LABEL, "DNS-1123 label") for v in values]


class SystemNodes(_Section):
    instance_type: str = "m6i.large"
    min_size: int = Field(2, ge=1)
    max_size: int = Field(3, ge=1)
    root_volume_gib: int = Field(50, ge=20, le=16384, alias="rootVolumeGiB")

    @model_validator(mode="after")
    def _sizes_ordered(self) -> "SystemNodes":
        if self.min_size > self.max_size:
            raise ValueError(f"minSize {self.min_size} is above maxSize {self.max_size}")
        return self


class Vpc(_Section):
    cidr: str = "10.0.0.0/16"
    availability_zones: int = Field(2, ge=2, le=6)
    # Pinned zone names: unset, the choice follows EC2's offerings, which can change under a running VPC.
    zones: Optional[list[str]] = None
    nat_gateways: Literal["single", "perAz"] = "single"
    id: Optional[str] = None
    private_subnet_ids: list[str] = []
    public_subnet_ids: list[str] = []

    @field_validator("cidr")
    @classmethod
    def _valid_cidr(cls, value: str) -> str:
        network = ipaddress.ip_network(value, strict=True)
        if network.version != 4 or not 16 <= network.prefixlen <= 20:
            raise ValueError(f"{value!r} must be an IPv4 network of /16 to /20, large enough for pod IPs")
        return value

    @model_validator(mode="after")
    def _zones_agree(self) -> "Vpc":
        if self.zones is None:
            return self
        if len(set(self.zones)) != len(self.zones) or not 2 <= len(self.zones) <= 6:
            raise ValueError(f"zones {self.zones} must name 2 to 6 different availability zones")
        if "availability_zones" in self.model_fields_set and self.availability_zones != len(self.zones):
            raise ValueError(f"availabilityZones {self.availability_zones} but zones names {len(self.zones)}; drop one of the two")
        return self

    @property
    def zone_count(self) -> int:
        return len(self.zones) if self.zones else self.availability_zones

    @model_validator(mode="after")
    def _existing_vpc_complete(self) -> "Vpc":
        if self.id and len(self.private_subnet_ids) < 2:
            raise ValueError("an existing vpc (id) needs privateSubnetIds in at least two availability zones")
        if not self.id and (self.private_subnet_ids or self.public_subnet_ids):
            raise ValueError("privateSubnetIds and publicSubnetIds are only for an existing vpc: set vpc.id too")
        return self


ANYWHERE = "0.0.0.0/0"


class Endpoint(_Section):
    private_access: bool = True
    # Empty means no public endpoint: reach the API from inside the VPC (a VPN, or CI runners there).
    public_access_cidrs: list[str] = []

    @field_validator("public_access_cidrs")
    @classmethod
    def _valid_cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_network(value, strict=True)
        return values

    @model_validator(mode="after")
    def _reachable(self) -> "Endpoint":
        if not self.private_access and not self.public_access_cidrs:
            raise ValueError("privateAccess false with no publicAccessCidrs leaves the API server unreachable")
        if not self.private_access and ANYWHERE not in self.public_access_cidrs:
            raise ValueError(
                f"privateAccess false with publicAccessCidrs {', '.join(self.public_access_cidrs)}: nodes in the "
                f"private subnets reach the public endpoint from the NAT gateways' addresses, which the list does "
                f"not admit, so they would never join; keep privateAccess true (or admit {ANYWHERE})"
            )
        return self


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
# A pool's node group is named gpu-<name>- plus the provider's 26-character unique suffix, and EKS
# allows 63 characters.
GPU_POOL_NAME_MAX_LENGTH = 63 - 26 - len("gpu--")


class GpuNodePool(_Section):
    name: str
    instance_types: list[str] = Field(min_length=1)
    min_size: int = Field(0, ge=0)
    max_size: int = Field(ge=1)
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    root_volume_gib: int = Field(200, ge=50, le=16384, alias="rootVolumeGiB")
    efa: bool = False
    placement_group: bool = False

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: str) -> str:
        _check_label(value, DNS_1123_LABEL, "DNS-1123 label")
        if len(value) > GPU_POOL_NAME_MAX_LENGTH:
            raise ValueError(
                f"{value!r} has {len(value)} characters, above {GPU_POOL_NAME_MAX_LENGTH}: its node group name "
                f"gpu-{value}- and a 26-character unique suffix must fit EKS's 63"
            )
        return value

    @field_validator("instance_types")
    @classmethod
    def _known_gpu_types(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in INSTANCE_TYPES]
        if unknown:
            raise ValueError(f"unknown GPU instance type {', '.join(unknown)}; known: {', '.join(INSTANCE_TYPES)}")
        shapes = {(INSTANCE_TYPES[v].gpu.model, INSTANCE_TYPES[v].gpu_count) for v in values}
        if len(shapes) > 1:
            described = ", ".join(f"{v} ({INSTANCE_TYPES[v].gpu_count}x {INSTANCE_TYPES[v].gpu.model})" for v in values)
            raise ValueError(f"all types in one pool need the same GPU model and count, got {described}")
        return values

    @model_validator(mode="after")
    def _sizes_ordered(self) -> "GpuNodePool":
        if self.min_size > self.max_size:
            raise ValueError(f"minSize {self.min_size} is above maxSize {self.max_size}")
        if self.efa and not all(INSTANCE_TYPES[t].gpu_count == 8 for t in self.instance_types):
            raise ValueError("efa is for 8-GPU types (g5.48xlarge, p4d, p4de, p5) that serve across nodes")
        return self

    @property
    def instance(self) -> InstanceType:
        """The smallest type in the pool: every fit check must hold on whichever type the autoscaler picks."""
        return min((INSTANCE_TYPES[t] for t in self.instance_types), key=lambda t: (t.vcpu, t.memory_gib))

    @property
    def gpus_per_node(self) -> int:
        return self.instance.gpu_count


class ExistingCluster(_Section):
    stack_reference: Optional[str] = None
    kubeconfig_output: str = "kubeconfig"
    kubeconfig: Optional[str] = None
    context: Optional[str] = None

    @field_validator("stack_reference")
    @classmethod
    def _qualified(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not STACK_REFERENCE.match(value):
            raise ValueError(f"{value!r} is not a fully qualified stack name org/project/stack")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ExistingCluster":
        if self.stack_reference and self.kubeconfig:
            raise ValueError("set either stackReference or kubeconfig, not both")
        if not (self.stack_reference or self.kubeconfig or self.context):
            raise ValueError("name the cluster: stackReference, kubeconfig (a secret) or a kubeconfig context")
        if "kubeconfig_output" in self.model_fields_set and not self.stack_reference:
            raise ValueError("kubeconfigOutput names an output of stackReference: no effect without it; remove it")
        return self


# Keys that only shape a cluster the program creates.
CREATED_CLUSTER_KEYS = (
    "support_type", "vpc", "endpoint", "system_nodes", "protect", "admin_principal_arns", "viewer_principal_arns",
)  # fmt: skip


class Cluster(_Section):
    name: str
    kubernetes_version: str = "1.34"
    # STANDARD: at the end of standard support AWS upgrades the control plane itself. EXTENDED keeps
    # the version for another 12 months at six times the control plane's price.
    support_type: Literal["STANDARD", "EXTENDED"] = "STANDARD"
    vpc: Vpc = Vpc()
    endpoint: Endpoint = Endpoint()
    system_nodes: SystemNodes = SystemNodes()
    gpu_node_pools: list[GpuNodePool] = []
    protect: bool = False
    # Who the cluster admits, through EKS access entries: everyone who runs `pulumi up` (CI's deploy
    # role, platform admins), and read-only identities such as the PR checks' preview role.
    admin_principal_arns: list[str] = []
    viewer_principal_arns: list[str] = []
    # Last: its validator reads the keys above.
    existing: Optional[ExistingCluster] = None

    @field_validator("existing")
    @classmethod
    def _nothing_to_create(cls, value: Optional[ExistingCluster], info: ValidationInfo) -> Optional[ExistingCluster]:
        """A key that shapes the cluster the program would create must not look as if it applied to someone else's."""
        if value is None:
            return value
        ignored = [
            to_camel(key)
            for key in CREATED_CLUSTER_KEYS
            if key in info.data and info.data[key] != cls.model_fields[key].default
        ]
        if ignored:
            keys = ", ".join(ignored[:-1]) + " and " + ignored[-1] if len(ignored) > 1 else ignored[0]
            verb, pronoun = ("have", "them") if len(ignored) > 1 else ("has", "it")
            raise ValueError(f"{keys} {verb} no effect on an existing cluster; remove {pronoun}")
        return value

    @field_validator("admin_principal_arns", "viewer_principal_arns")
    @classmethod
    def _iam_principals(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(r"arn:aws[\w-]*:iam::\d{12}:(user|role)/[\w+=,.@/-]+", value):
                raise ValueError(f"{value!r} is not an IAM user or role ARN (arn:aws:iam::<account>:role/<name>)")
        return values

    @model_validator(mode="after")
    def _someone_administers(self) -> "Cluster":
        if self.existing is None and not self.admin_principal_arns:
            raise ValueError(
                "adminPrincipalArns is empty: list the IAM roles or users that run `pulumi up` (CI's deploy role, "
                "platform admins); a created cluster admits no one else"
            )
        both = sorted(set(self.admin_principal_arns) & set(self.viewer_principal_arns))
        if both:
            raise ValueError(f"{', '.join(both)} is in both adminPrincipalArns and viewerPrincipalArns; keep one")
        for key, arns in (("adminPrincipalArns", self.admin_principal_arns), ("viewerPrincipalArns", self.viewer_principal_arns)):
            if twice := _duplicates(arns):
                raise ValueError(f"{', '.join(twice)} is listed more than once in {key}; an access entry exists once")
        return self

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: str) -> str:
        return _check_label(value, DNS_1123_LABEL, "DNS-1123 label")

    @field_validator("kubernetes_version")
    @classmethod
    def _supported_version(cls, value: str) -> str:
        if value not in CLUSTER_AUTOSCALER_IMAGE_TAGS:
            raise ValueError(
                f"{value!r} is not a Kubernetes minor version this platform supports: "
                f"{', '.join(CLUSTER_AUTOSCALER_IMAGE_TAGS)} (those with a cluster-autoscaler image pinned), "
                f"written like \"1.34\""
            )
        return value

    @property
    def pools(self) -> dict[str, GpuNodePool]:
        return {p.name: p for p in self.gpu_node_pools}


class Replicas(_Section):
    min: int = Field(1, ge=0)
    max: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "Replicas":
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Autoscaling(_Section):
    mode: Literal["keda", "hpa-cpu"] = "keda"
    queue_depth_per_replica: int = Field(10, ge=1)
    target_cpu_utilization_percent: int = Field(70, ge=10, le=100)
    # With replicas.min 0: requests in flight per replica, as the KEDA HTTP add-on's interceptor counts them.
    concurrency_per_replica: int = Field(64, ge=1)
    # With replicas.min 0: idle time before the last replica goes. A cold start costs a node and minutes of loading.
    scale_to_zero_after_seconds: int = Field(900, ge=60, le=86400)

    @field_validator("mode", mode="before")
    @classmethod
    def _an_autoscaler(cls, value: Any) -> Any:
        if value == "none":
            raise ValueError(
                "none is refused: the platform's policy gives every model an autoscaler; for a fixed count "
                "keep mode keda and set replicas.min = replicas.max"
            )
        return value


class Resources(_Section):
    cpu: str
    memory: str

    @field_validator("cpu")
    @classmethod
    def _cpu_quantity(cls, value: str) -> str:
        if sizing.parse_cpu_millis(value) <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("memory")
    @classmethod
    def _memory_quantity(cls, value: str) -> str:
        if sizing.parse_memory_mib(value) <= 0:
            raise ValueError("must be positive")
        return value


class Model(_Section):
    name: str
    model: str
    served_model_name: Optional[str] = None
    gpu_pool: Optional[str] = None
    tensor_parallel_size: int = 1
    quantization: Optional[Literal[QUANTIZATIONS]] = None  # type: ignore[valid-type]
    parameters_billions: Optional[float] = Field(None, gt=0)
    max_model_len: Optional[int] = Field(None, gt=0)
    kv_cache_bytes_per_token: Optional[int] = Field(None, gt=0)
    gpu_memory_utilization: Optional[float] = Field(None, gt=0, lt=1)
    replicas: Replicas = Replicas()
    autoscaling: Autoscaling = Autoscaling()
    resources: Optional[Resources] = None
    image: str = DEFAULT_VLLM_IMAGE
    extra_args: list[str] = []
    startup_timeout_seconds: Optional[int] = Field(None, ge=30)
    shutdown_timeout_seconds: int = Field(60, ge=0, le=3600)
    simulate: bool = False

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: str) -> str:
        return _check_label(value, DNS_1035_LABEL, "DNS-1035 label")

    @field_validator("model")
    @classmethod
    def _model_source(cls, value: str) -> str:
        if not (HF_MODEL_ID.match(value) or S3_URI.match(value)):
            raise ValueError(f"{value!r} is neither a Hugging Face id (org/name) nor an s3://bucket/prefix URI")
        return value

    @field_validator("served_model_name")
    @classmethod
    def _plain_served_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not SERVED_MODEL_NAME.match(value):
            raise ValueError(
                f"{value!r} must be letters, digits and . _ : / - (at most 255), such as meta-llama/Llama-3.1-8B-Instruct"
            )
        return value

    @field_validator("tensor_parallel_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value not in TENSOR_PARALLEL_SIZES:
            raise ValueError(f"{value} is not a power of two from 1 to 8 (1, 2, 4 or 8)")
        return value

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if "@sha256:" in value:
            return value
        repository, _, tag = value.rpartition(":")
        if not repository or "/" in tag or not tag:
            raise ValueError(f"{value!r} has no tag; pin a release such as {DEFAULT_VLLM_IMAGE}")
        if tag == "latest":
            raise ValueError(f"{value!r} floats; pin a release such as {DEFAULT_VLLM_IMAGE}")
        return value

    @field_validator("extra_args")
    @classmethod
    def _no_managed_flags(cls, values: list[str]) -> list[str]:
        problems = []
        parallel = (vllm_args.PIPELINE_PARALLEL, vllm_args.DATA_PARALLEL)
        for flag in vllm_args.flags(values):
            read_as = next((name for name in (*MANAGED_VLLM_FLAGS, *parallel) if vllm_args.names(flag, name)), None)
            spelled = flag.written if flag.written == read_as else f"{flag.written} (vLLM's {read_as})"
            if read_as in MANAGED_VLLM_FLAGS:
                problems.append(f"{spelled} is set by the platform itself; remove it from extraArgs")
            # vLLM starts size x tensorParallelSize workers, one GPU each, in a pod that has
            # tensorParallelSize GPUs: it cannot start, and the pod crash-loops.
            elif read_as in parallel and flag.value != "1":
                problems.append(
                    f"{spelled} {flag.value}: vLLM would need {flag.value} x tensorParallelSize GPUs and the pod "
                    "gets tensorParallelSize; scale with tensorParallelSize and replicas, remove it from extraArgs"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return values

    @property
    def effective_served_name(self) -> str:
        return self.served_model_name or self.model

    @property
    def weights_bucket(self) -> Optional[tuple[str, str]]:
        """(bucket, key prefix) of an s3:// model, None for a Hugging Face id."""
        if not self.model.startswith("s3://"):
            return None
        bucket, _, prefix = self.model.removeprefix("s3://").partition("/")
        return bucket, prefix

    @property
    def scales_to_zero(self) -> bool:
        """Traffic reaches the model through the KEDA HTTP add-on's interceptor, which wakes it from zero."""
        return self.autoscaling.mode == "keda" and self.replicas.min == 0

    @property
    def effective_gpu_memory_utilization(self) -> float:
        return self.gpu_memory_utilization or sizing.DEFAULT_GPU_MEMORY_UTILIZATION

    @property
    def effective_parameters_billions(self) -> Optional[float]:
        return self.parameters_billions or sizing.parameters_from_model_id(self.model)

    def effective_kv_cache_bytes_per_token(self, parameters_billions: float) -> int:
        return self.kv_cache_bytes_per_token or sizing.default_kv_cache_bytes_per_token(parameters_billions)


PROMETHEUS_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$")
STORAGE_QUANTITY = re.compile(r"^[1-9][0-9]*(Gi|Ti)$")


class Prometheus(_Section):
    retention: str = "15d"
    storage_size: str = "50Gi"
    # The EBS CSI gp3 class the cluster layer installs as the default.
    storage_class_name: str = "gp3"
    scrape_interval: str = "15s"

    @field_validator("retention", "scrape_interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not PROMETHEUS_DURATION.match(value):
            raise ValueError(f"{value!r} is not a Prometheus duration such as 15s, 30m or 15d")
        return value

    @field_validator("storage_size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not STORAGE_QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a volume size in Gi or Ti, such as 50Gi")
        return value


class Observability(_Section):
    enabled: bool = True
    prometheus: Prometheus = Prometheus()
    grafana_enabled: bool = True
    alertmanager_enabled: bool = True
    time_to_first_token_slo_seconds: float = Field(2.0, gt=0)
    kv_cache_usage_alert_ratio: float = Field(0.9, gt=0, le=1)
    # Set with `pulumi config set --path --secret vllm-platform:observability.grafanaAdminPassword`;
    # unset, pulumi-random generates one once and the stack's state keeps it.
    grafana_admin_password: Optional[str] = Field(None, repr=False)
    # Where models' KEDA triggers query when this stack does not run its own Prometheus.
    external_prometheus_url: Optional[str] = None
    # With enabled false: namespaces whose Prometheus or agents scrape the models; by default the one
    # externalPrometheusUrl names (http://NAME.NAMESPACE.svc...). The models' NetworkPolicy admits them.
    scrape_namespaces: Optional[list[str]] = None
    # With enabled false: ServiceMonitors for an operator-run Prometheus of your own; off by default,
    # since a cluster without the prometheus-operator CRDs would refuse them.
    service_monitors: Optional[bool] = None
    # The DCGM exporter and GPU alerts; by default on when some model runs on GPUs (not simulated).
    gpu_metrics: Optional[bool] = None

    @field_validator("scrape_namespaces")
    @classmethod
    def _namespaces_are_labels(cls, values: Optional[list[str]]) -> Optional[list[str]]:
        return None if values is None else _namespace_names(values)

    @field_validator("external_prometheus_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http(s) URL such as http://prometheus.monitoring.svc:9090")
        return value

    @model_validator(mode="after")
    def _one_prometheus(self) -> "Observability":
        if self.enabled and self.external_prometheus_url:
            raise ValueError(
                "externalPrometheusUrl is for enabled false; with enabled true the models query this stack's Prometheus"
            )
        if self.enabled and (self.scrape_namespaces is not None or self.service_monitors is not None):
            raise ValueError(
                "scrapeNamespaces and serviceMonitors are for enabled false; this stack's own Prometheus "
                f"scrapes from {MONITORING_NAMESPACE} through ServiceMonitors"
            )
        return self

    @property
    def scraper_namespaces(self) -> list[str]:
        """Where the Prometheus that scrapes the models runs; the models' NetworkPolicy admits it."""
        if self.enabled:
            return [MONITORING_NAMESPACE]
        if self.scrape_namespaces is not None:
            return self.scrape_namespaces
        host = urlsplit(self.external_prometheus_url or "").hostname or ""
        parts = host.split(".")
        return [parts[1]] if len(parts) >= 3 and parts[2] == "svc" else []

    @property
    def creates_service_monitors(self) -> bool:
        return self.enabled if self.service_monitors is None else self.service_monitors


class Verify(_Section):
    """Defaults for `python -m tools.verify` against this stack; its flags override them."""

    p95_slo_seconds: float = Field(3.0, gt=0)


class PlatformConfig(_Section):
    namespace: str = "inference"
    cluster: Cluster
    models: list[Model] = Field(min_length=1)
    observability: Observability = Observability()
    verify: Verify = Verify()
    simulate_accelerators: bool = False
    # Namespaces whose pods may call the models; everything else is denied at the serving port.
    client_namespaces: list[str] = []

    @field_validator("namespace")
    @classmethod
    def _namespace_is_label(cls, value: str) -> str:
        if value in RESERVED_NAMESPACES:
            raise ValueError(
                f"{value!r} is where the platform runs its own components or Kubernetes its system; "
                "choose a namespace of the models' own, such as inference"
            )
        return _check_label(value, DNS_1123_LABEL, "DNS-1123 label")

    @field_validator("client_namespaces")
    @classmethod
    def _namespaces_are_labels(cls, values: list[str]) -> list[str]:
        return _namespace_names(values)

    @property
    def runs_gpu_metrics(self) -> bool:
        """The DCGM exporter and GPU alerts: only where some model is on GPUs, unless the config says."""
        configured = self.observability.gpu_metrics
        on_gpus = any(not self.is_simulated(model) for model in self.models)
        return self.observability.enabled and (on_gpus if configured is None else configured)

    @property
    def any_scales_to_zero(self) -> bool:
        """Whether the KEDA HTTP add-on is needed, and its interceptor must reach the models."""
        return any(model.scales_to_zero for model in self.models)

    def is_simulated(self, model: Model) -> bool:
        return self.simulate_accelerators or model.simulate

    def pool_of(self, model: Model) -> GpuNodePool:
        assert model.gpu_pool is not None
        return self.cluster.pools[model.gpu_pool]

    def models_on(self, pool: GpuNodePool) -> list[Model]:
        """The models whose pods run on the pool's nodes."""
        return [m for m in self.models if not self.is_simulated(m) and m.gpu_pool == pool.name]

    def pod_resources(self, model: Model) -> sizing.PodResources:
        if model.resources:
            return sizing.PodResources(
                cpu_millis=sizing.parse_cpu_millis(model.resources.cpu),
                memory_mib=sizing.parse_memory_mib(model.resources.memory),
            )
        return sizing.default_resources(self.pool_of(model).instance, model.tensor_parallel_size)

    def nodes_for(self, model: Model, replicas: int) -> int:
        """Nodes of its pool that `replicas` of the model occupy, packed among themselves."""
        instance = self.pool_of(model).instance
        per_node = sizing.replicas_per_node(instance, model.tensor_parallel_size, self.pod_resources(model))
        return sizing.nodes_for_replicas(replicas, per_node)

    @cached_property
    def pool_nodes_at_max(self) -> dict[str, int]:
        """Per pool, the nodes its models occupy with each at replicas.max; once, not once per model."""
        return {
            name: sum(self.nodes_for(m, m.replicas.max) for m in self.models_on(pool))
            for name, pool in self.cluster.pools.items()
        }

    def has_surge_room(self, model: Model) -> bool:
        """Whether a rollout can add a new replica before removing an old one, with every model of the pool at replicas.max."""
        if self.is_simulated(model):
            return True
        pool = self.pool_of(model)
        others = self.pool_nodes_at_max[pool.name] - self.nodes_for(model, model.replicas.max)
        return others + self.nodes_for(model, model.replicas.max + 1) <= pool.max_size

    def startup_budget_seconds(self, model: Model) -> int:
        if model.startup_timeout_seconds:
            return model.startup_timeout_seconds
        if self.is_simulated(model):
            load = sizing.simulated_timing(model.effective_parameters_billions, model.tensor_parallel_size).load_seconds
            return load + SIMULATED_START_MARGIN_SECONDS
        params = model.effective_parameters_billions
        assert params is not None
        return sizing.startup_budget_seconds(params, model.quantization)


def _describe_location(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """('models', 1, 'tensorParallelSize') -> 'models[llama-13b].tensorParallelSize'."""
    text, node = "", raw
    for part in loc:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and part < len(node) and isinstance(node[part], dict) else None
            text += f"[{name or part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else {}
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part, {}) if isinstance(node, dict) else {}
    return text or "config"


def _pydantic_problems(error: ValidationError, raw: dict[str, Any]) -> list[str]:
    problems = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a known key (check its spelling against the README's config reference)"
        elif item["type"] == "missing":
            message = "is required"
        problems.append(f"{_describe_location(loc, raw)}: {message}")
    return problems


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def _fit(model: Model, params: float, gpu: Gpu, tensor_parallel: int, quantization: Optional[str]) -> sizing.GpuFit:
    sequence_kv_gb = 0.0
    if model.max_model_len:
        sequence_kv_gb = sizing.sequence_kv_cache_gb(model.effective_kv_cache_bytes_per_token(params), model.max_model_len)
    return sizing.gpu_fit(
        params, quantization, tensor_parallel, gpu.memory_gb, model.effective_gpu_memory_utilization, sequence_kv_gb
    )


# Quantizations a way out may suggest, best first: fp8 keeps quality closest to bf16; awq_marlin, not
# awq, because `awq` forces vLLM's slow AWQ kernel where Marlin runs (Ampere and newer: every catalog GPU).
SUGGESTED_QUANTIZATIONS = {"fp8": "FP8", "awq_marlin": "AWQ"}


def _checkpoint_advice(quantizations: list[str]) -> str:
    formats = " or ".join(SUGGESTED_QUANTIZATIONS[q] for q in quantizations)
    return f"an {formats} checkpoint (quantization {' or '.join(quantizations)})"


def _lighter_quantizations(model: Model) -> list[str]:
    current = sizing.BYTES_PER_PARAMETER[model.quantization]
    return [q for q in SUGGESTED_QUANTIZATIONS if sizing.BYTES_PER_PARAMETER[q] < current]


def _ways_out(model: Model, params: float, pool: GpuNodePool) -> list[str]:
    """Changes that each pass the fit check on their own, on this pool's GPU first, else on a larger one."""
    gpu, ways = pool.instance.gpu, []
    wider = [tp for tp in TENSOR_PARALLEL_SIZES if tp > model.tensor_parallel_size]
    tp = next((tp for tp in wider if _fit(model, params, gpu, tp, model.quantization).fits), None)
    if tp is not None and tp <= pool.gpus_per_node:
        ways.append(f"set tensorParallelSize {tp}")
    elif tp is not None:
        host = min(
            (t for t in INSTANCE_TYPES.values() if t.gpu == gpu and t.gpu_count >= tp),
            key=lambda t: (t.gpu_count, t.on_demand_usd_per_hour),
        )
        ways.append(f"use tensorParallelSize {tp} on a pool of {host.name} ({host.gpu_count}x {gpu.model})")
    lighter = [q for q in _lighter_quantizations(model) if _fit(model, params, gpu, model.tensor_parallel_size, q).fits]
    if lighter:
        ways.append(f"use {_checkpoint_advice(lighter)}")
    return ways or [_larger_gpu(model, params, pool)]


def _larger_gpu(model: Model, params: float, pool: GpuNodePool) -> str:
    """The cheapest catalog type of a larger GPU that holds the model on one node, and how."""
    larger = [t for t in INSTANCE_TYPES.values() if t.gpu.memory_gb > pool.instance.gpu.memory_gb]
    for instance in sorted(larger, key=lambda t: t.on_demand_usd_per_hour):
        for quantization in (model.quantization, *_lighter_quantizations(model)):
            for tp in (tp for tp in TENSOR_PARALLEL_SIZES if tp <= instance.gpu_count):
                if _fit(model, params, instance.gpu, tp, quantization).fits:
                    how = f"move to a pool of {instance.name} ({instance.gpu_count}x {instance.gpu.model})"
                    how += f" with tensorParallelSize {tp}"
                    if quantization != model.quantization:
                        how += f" and {_checkpoint_advice([quantization])}"
                    return how
    return "no catalog type holds it on one node, even as a 4-bit checkpoint"


def _gpu_fit_problems(model: Model, pool: GpuNodePool, params: float) -> list[str]:
    instance, where, tp = pool.instance, f"models[{model.name}]", model.tensor_parallel_size
    fit = _fit(model, params, instance.gpu, tp, model.quantization)
    if fit.fits:
        return []
    ways = _ways_out(model, params, pool)
    holds = (
        f"a {instance.name} {instance.gpu.model} holds {instance.gpu.memory_gb:g} GB "
        f"(x{model.effective_gpu_memory_utilization:.2f} = {fit.usable_per_gpu_gb:.1f} GB)"
    )
    if not fit.weights_fit:
        return [
            f"{where}: needs ~{fit.weights_per_gpu_gb:.1f} GB of weights per GPU "
            f"({params:g}B parameters, {model.quantization or 'bf16'}, tensorParallelSize {tp}) "
            f"plus {sizing.RUNTIME_OVERHEAD_GB + sizing.MIN_KV_CACHE_GB:.1f} GB for runtime and KV cache, "
            f"but {holds}; {', or '.join(ways)}"
        ]
    assert model.max_model_len is not None
    per_token = model.effective_kv_cache_bytes_per_token(params)
    source = "kvCacheBytesPerToken" if model.kv_cache_bytes_per_token else f"estimated for {params:g}B"
    shorter = sizing.tokens_fitting(fit.kv_room_per_gpu_gb, per_token, tp)
    if shorter:
        ways.insert(0, f"lower maxModelLen to {shorter} or less")
    return [
        f"{where}.maxModelLen: one {model.max_model_len}-token sequence needs ~{fit.kv_cache_per_gpu_gb:.1f} GB "
        f"of KV cache per GPU ({per_token / 1024:g} KiB per token, {source}, over tensorParallelSize {tp}), but only "
        f"~{fit.kv_room_per_gpu_gb:.1f} GB is left after {fit.weights_per_gpu_gb:.1f} GB of weights and "
        f"{sizing.RUNTIME_OVERHEAD_GB:g} GB of runtime, where {holds}, so vLLM would refuse to start; "
        f"{', or '.join(ways)}"
    ]


def _node_fit_problems(cfg: PlatformConfig, model: Model, pool: GpuNodePool, params: float) -> list[str]:
    instance, where, problems = pool.instance, f"models[{model.name}]", []
    if model.resources:
        pod = cfg.pod_resources(model)
        cpu, memory = pod.cpu_millis, pod.memory_mib
        cpu_limit, memory_limit = allocatable_cpu_millis(instance), allocatable_memory_mib(instance)
        if cpu > cpu_limit:
            problems.append(
                f"{where}.resources.cpu: {model.resources.cpu} exceeds the {sizing.format_cpu(cpu_limit)} CPU "
                f"a {instance.name} in pool {pool.name} can allocate to one pod; lower it or use a larger type"
            )
        if memory > memory_limit:
            problems.append(
                f"{where}.resources.memory: {model.resources.memory} exceeds the {memory_limit}Mi "
                f"a {instance.name} in pool {pool.name} can allocate to one pod; lower it or use a larger type"
            )
        floor = sizing.tensor_parallel_memory_floor_mib(model.tensor_parallel_size)
        if model.tensor_parallel_size > 1 and memory < floor:
            problems.append(
                f"{where}.resources.memory: {model.resources.memory} is below the {sizing.format_memory(floor)} "
                f"tensorParallelSize {model.tensor_parallel_size} needs: the {sizing.format_memory(sizing.SHM_MIB)} "
                f"memory-backed /dev/shm counts against the limit, and vLLM's {model.tensor_parallel_size + 2} "
                f"processes take {sizing.format_memory(sizing.PROCESS_MEMORY_MIB)} each; raise it to "
                f"{sizing.format_memory(floor)} or more"
            )
    disk = sizing.model_cache_gib(params, model.quantization) + sizing.IMAGE_AND_SYSTEM_DISK_GIB
    if disk > pool.root_volume_gib:
        problems.append(
            f"{where}: the checkpoint needs ~{disk} GiB of node disk with the image, but pool {pool.name} "
            f"has rootVolumeGiB {pool.root_volume_gib}; raise cluster.gpuNodePools[{pool.name}].rootVolumeGiB"
        )
    nodes_needed = cfg.nodes_for(model, model.replicas.max)
    if model.tensor_parallel_size <= pool.gpus_per_node and nodes_needed > pool.max_size:
        problems.append(
            f"{where}.replicas.max: {model.replicas.max} replicas of {model.tensor_parallel_size} GPU(s) need "
            f"{nodes_needed} {instance.name} nodes, but pool {pool.name} has maxSize {pool.max_size}; "
            f"lower replicas.max or raise the pool's maxSize"
        )
    return problems


def _model_problems(cfg: PlatformConfig, model: Model) -> list[str]:
    where = f"models[{model.name}]"
    problems = []
    if model.autoscaling.mode == "hpa-cpu" and model.replicas.min == 0:
        problems.append(f"{where}.replicas.min: an HPA cannot scale to 0; set min 1 or use autoscaling.mode keda")
    if model.scales_to_zero and len(model.name + BACKEND_SERVICE_SUFFIX) > 63:
        problems.append(
            f"{where}.name: with replicas.min 0 its pods' Service is {model.name}{BACKEND_SERVICE_SUFFIX}, "
            f"longer than 63 characters; shorten the name to {63 - len(BACKEND_SERVICE_SUFFIX)} or fewer"
        )
    if model.scales_to_zero and not cfg.observability.enabled:
        problems.append(
            f"{where}.replicas.min: 0 needs the KEDA HTTP add-on to hold requests and wake the model, and "
            f"observability.enabled false leaves it uninstalled; set min 1 or enable observability"
        )
    if model.autoscaling.mode == "keda" and not cfg.observability.enabled and not cfg.observability.external_prometheus_url:
        problems.append(
            f"{where}.autoscaling: KEDA needs a Prometheus to query, but observability.enabled is false; "
            f"set observability.externalPrometheusUrl or enable observability"
        )
    if cfg.is_simulated(model):
        return problems
    if model.gpu_pool is None:
        return [*problems, f"{where}.gpuPool: is required for a model on GPUs (pools: {', '.join(cfg.cluster.pools) or 'none'})"]
    pool = cfg.cluster.pools.get(model.gpu_pool)
    if pool is None:
        known = ", ".join(cfg.cluster.pools) or "none are configured"
        return [*problems, f"{where}.gpuPool: {model.gpu_pool!r} is not a pool in cluster.gpuNodePools ({known})"]
    if model.tensor_parallel_size > pool.gpus_per_node:
        problems.append(
            f"{where}.tensorParallelSize: {model.tensor_parallel_size} exceeds the {pool.gpus_per_node} GPU(s) "
            f"per {pool.instance.name} node in pool {pool.name}; lower it or use a pool with more GPUs per node"
        )
    params = model.effective_parameters_billions
    if params is None:
        return [
            *problems,
            f"{where}.parametersBillions: cannot read the size from {model.model!r}; set parametersBillions",
        ]
    problems += _gpu_fit_problems(model, pool, params)
    return problems + _node_fit_problems(cfg, model, pool, params)


def _pool_demand(cfg: PlatformConfig, pool: GpuNodePool, at: Literal["min", "max"]) -> tuple[int, str]:
    """Nodes the pool's models need with each at replicas.min or .max, and each model's share.

    Each model's replicas pack among themselves and models are counted on nodes of their own: an
    upper bound, exact for one-GPU types, that may overcount where models could share a multi-GPU
    node. A model that fits no node of the pool is counted by its own check, not here.
    """
    shares = {
        m.name: (getattr(m.replicas, at), cfg.nodes_for(m, getattr(m.replicas, at)))
        for m in cfg.models_on(pool)
        if m.tensor_parallel_size <= pool.gpus_per_node
    }
    described = ", ".join(f"{name}: {replicas} replica(s) on {nodes} node(s)" for name, (replicas, nodes) in shares.items())
    return sum(nodes for _, nodes in shares.values()), described


def _overcommitted_pools(cfg: PlatformConfig, bound: Literal["min", "max"]) -> list[tuple[GpuNodePool, int, str]]:
    """Pools whose models together, at replicas.`bound`, need more nodes than maxSize: (pool, nodes, who)."""
    found = []
    for pool in cfg.cluster.gpu_node_pools:
        # One model alone is held to the pool's maxSize at replicas.max by its own check.
        if len(cfg.models_on(pool)) < 2:
            continue
        nodes, described = _pool_demand(cfg, pool, bound)
        if nodes > pool.max_size:
            found.append((pool, nodes, described))
    return found


def _pool_problems(cfg: PlatformConfig) -> list[str]:
    return [
        f"cluster.gpuNodePools[{pool.name}].maxSize: {pool.max_size}, but its models at replicas.min "
        f"need {nodes} {pool.instance.name} nodes ({described}), so some replicas would stay Pending; "
        f"raise maxSize to {nodes} or lower the models' replicas.min"
        for pool, nodes, described in _overcommitted_pools(cfg, "min")
    ]


def _platform_problems(cfg: PlatformConfig) -> list[str]:
    problems = []
    for name in _duplicates([p.name for p in cfg.cluster.gpu_node_pools]):
        problems.append(f"cluster.gpuNodePools: name {name!r} is used more than once")
    for name in _duplicates([m.name for m in cfg.models]):
        problems.append(f"models: name {name!r} is used more than once")
    for served in _duplicates([m.effective_served_name for m in cfg.models]):
        problems.append(f"models: servedModelName {served!r} is served twice; metrics and routing need it unique")
    for model in cfg.models:
        problems += _model_problems(cfg, model)
    return problems + _pool_problems(cfg)


def config_notes(cfg: PlatformConfig) -> list[str]:
    """What a valid config still deserves a word about: checks that did not run, and what runs differently."""
    notes = []
    for model in cfg.models:
        if cfg.is_simulated(model):
            notes.append(
                f"models[{model.name}]: simulated with llm-d-inference-sim, no GPU; GPU, node and disk fit checks skipped"
            )
            continue
        if model.weights_bucket and cfg.cluster.existing is not None:
            notes.append(
                f"models[{model.name}]: {model.model} is read with the pod's own AWS identity; an existing-cluster "
                f"stack creates no IAM, so give ServiceAccount {cfg.namespace}/{model.name} read access to it there"
            )
        pool = cfg.pool_of(model)
        if model.quantization == "fp8" and not pool.instance.gpu.native_fp8:
            gpu = pool.instance.gpu
            notes.append(
                f"models[{model.name}]: fp8 on {gpu.model} ({gpu.architecture.capitalize()}) runs weight-only "
                f"(FP8 Marlin): weights take 1 byte per parameter, activations and compute stay 16-bit"
            )
        if not cfg.has_surge_room(model):
            others = [m.name for m in cfg.models_on(pool) if m.name != model.name]
            beside = ", ".join(others) if len(others) <= 3 else f"{len(others)} other models"
            notes.append(
                f"models[{model.name}]: pool {pool.name} (maxSize {pool.max_size}) has no node left for an extra "
                f"replica at replicas.max {model.replicas.max}"
                + (f" beside {beside} at theirs" if others else "")
                + ", so a rollout replaces one replica at a time"
                + (", and the model is down while its only replica restarts" if model.replicas.max == 1 else "")
                + "; raise the pool's maxSize for surge rollouts"
            )
    for pool, nodes, described in _overcommitted_pools(cfg, "max"):
        notes.append(
            f"cluster.gpuNodePools[{pool.name}]: its models at replicas.max need {nodes} {pool.instance.name} "
            f"nodes ({described}) but maxSize is {pool.max_size}; they cannot all be at replicas.max at once, "
            f"and a model may stay below it while the others hold the nodes; raise maxSize to {nodes} if they must"
        )
    return notes


def token_notes(cfg: PlatformConfig, has_token: bool) -> list[str]:
    """A gated checkpoint (meta-llama/*, google/gemma-*, ...) without a token fails only after the startup budget."""
    hub = [m.model for m in cfg.models if m.weights_bucket is None and not cfg.is_simulated(m)]
    if has_token or not hub:
        return []
    return [
        f"{HF_TOKEN_KEY}: not set, so {', '.join(sorted(set(hub)))} download anonymously; a gated repository "
        f"(meta-llama/* among them) refuses that. Set it: pulumi config set --secret {CONFIG_NAMESPACE}:{HF_TOKEN_KEY} hf_..."
    ]


def parse_config(raw: dict[str, Any]) -> PlatformConfig:
    """Validate the raw `vllm-platform:` values (keys without the namespace) or raise ConfigError."""
    try:
        cfg = PlatformConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_pydantic_problems(error, raw)) from None
    problems = _platform_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


HF_TOKEN_KEY = "hfToken"


def platform_values(config: dict[str, str]) -> dict[str, Any]:
    """The `vllm-platform:` keys of an engine config map (values as JSON text), decoded for parse_config.

    Every key is passed on, so a misspelt one is an error, never a silent default. The HF token is
    left out: it is read as a secret on its own and never validated into plain state."""
    prefix, raw = f"{CONFIG_NAMESPACE}:", {}
    for key, text in config.items():
        name = key.removeprefix(prefix)
        if name == key or name == HF_TOKEN_KEY:
            continue
        try:
            raw[name] = json.loads(text)
        except ValueError:
            raw[name] = text  # a plain string such as `namespace: inference`
    return raw


def _engine_config() -> dict[str, str]:
    """Every config value the engine gave this program, read without the secret-access warnings of
    pulumi.Config: secrets inside (the Grafana password) are wrapped where they are used."""
    keys = {*pulumi.runtime.config.CONFIG.get(), *pulumi.runtime.config.get_config_env()}
    return {key: pulumi.runtime.config.get_config(key) for key in keys}


def load_stack_config() -> tuple[PlatformConfig, Optional[pulumi.Output[str]]]:
    """Read and validate this stack's config; a bad config stops the program with one clear error."""
    try:
        cfg = parse_config(platform_values(_engine_config()))
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
    token = pulumi.Config(CONFIG_NAMESPACE).get_secret(HF_TOKEN_KEY)
    for note in config_notes(cfg) + token_notes(cfg, token is not None):
        pulumi.log.warn(note)
    return cfg, token
