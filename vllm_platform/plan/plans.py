"""The plan's records: one frozen `PoolPlan` per pool and `ModelPlan` per model, and the `Plan` that holds them.

Every field is resolved once, by `resolve.resolve`; builders read them and compute nothing of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional

from vllm_platform.catalog import INSTANCE_TYPES, InstanceType
from vllm_platform.config.gateway import Exposure, TokenKind
from vllm_platform.config.models import Autoscaling, AutoscalingMode, Quantization, Replicas
from vllm_platform.config.platform import PlatformConfig
from vllm_platform.config.pools import CapacityKind
from vllm_platform.contract import BACKEND_SERVICE_SUFFIX
from vllm_platform.plan.coldstart import ColdStart
from vllm_platform.plan.delivery import ImagePlan, ImageRoute, WeightsPlan
from vllm_platform.plan.serving import RollingStep
from vllm_platform.plan.sizing import PodResources


@dataclass(frozen=True)
class PoolPlan:
    name: str
    instance_types: tuple[str, ...]
    # The smallest of its types: every fit check holds on whichever type launches.
    instance: InstanceType
    max_size: int
    # Karpenter's capacity types, in its order of preference, and the capacity reservations' selector terms.
    capacity_types: tuple[CapacityKind, ...]
    capacity_reservations: tuple[dict[str, Any], ...]
    consolidate_after: str
    expire_after: str
    # The NodePool's terminationGracePeriod: the longest drain of a model on the pool, rounded up to a step so
    # that a model's edit seldom changes it (a change replaces the pool's nodes as drifted).
    drain_seconds: int
    # An existing cluster's node group minimum; 0 on Karpenter, which keeps no idle node.
    min_size: int
    root_volume_gib: int
    # Spare nodes held by placeholder pods that any new replica preempts.
    warm_nodes: int
    efa_interfaces: int
    placement_group: bool
    # Nodes its models occupy with each at replicas.max, and at replicas.min, packed among themselves.
    nodes_at_max: int
    nodes_at_min: int

    @property
    def gpus_per_node(self) -> int:
        return self.instance.gpu_count

    @property
    def dearest_usd_per_hour(self) -> float:
        """The price the pool's costs count: the dearest of its types, at on-demand prices."""
        return max(INSTANCE_TYPES[t].on_demand_usd_per_hour for t in self.instance_types)

    @property
    def widest_vcpu(self) -> int:
        """The vCPUs of the pool's widest type, which bound what its nodes may add up to."""
        return max(INSTANCE_TYPES[t].vcpu for t in self.instance_types)


@dataclass(frozen=True)
class ModelPlan:
    name: str
    namespace: str
    served_name: str
    # The model as the config names it: a Hugging Face id, or an s3:// URI; and the hub commit it is pinned to.
    source: str
    revision: Optional[str]
    # Where vLLM reads the weights: the hub, the config's s3:// prefix, or the stack's cache after staging.
    weights: WeightsPlan
    # The image as the config names it, and the registry the nodes pull it through.
    image: str
    image_plan: ImagePlan
    simulated: bool
    pool: Optional[PoolPlan]
    tensor_parallel_size: int
    # nvidia.com/gpu the pod requests: its tensor parallel size, none when simulated.
    gpus: int
    parameters_billions: Optional[float]
    quantization: Optional[Quantization]
    resources: PodResources
    # Node disk for the checkpoint (downloaded) or its config and caches (streamed); None when simulated.
    ephemeral_storage_gib: Optional[int]
    shared_memory: bool
    replicas: Replicas
    autoscaling: Autoscaling
    scales_to_zero: bool
    # GPU nodes the model's replicas occupy at replicas.max (0 when simulated).
    nodes_at_max: int
    # Whether the pool holds one more replica's nodes beside those and its other models' at theirs.
    surge_room: bool
    rolling_update: RollingStep
    shutdown_timeout_seconds: int
    prestop_seconds: int
    termination_grace_seconds: int
    startup_budget_seconds: int
    # The estimate of a new replica's start, phase by phase; None for a simulated model.
    cold_start: Optional[ColdStart]
    # What `pulumi up` allows one new pod, from a GPU node scaled up from zero to serving: the estimate with
    # its safety factor.
    cold_start_seconds: int
    # One step of a rolling update: an old replica drains and frees its GPU, a new one cold-starts.
    rollout_wave_seconds: int
    rollout_timeout_seconds: int
    # vLLM's flags after `vllm serve`, or the simulator's.
    args: tuple[str, ...]
    # The simulator holds its port closed this long, as vLLM does while it loads.
    simulated_load_seconds: int
    # An existing cluster's nodes, which cluster-autoscaler may scale and repack: its pods then say they may not be
    # evicted for that. A created cluster's GPU nodes are Karpenter's, whose pools consolidate only empty nodes.
    guarded_from_cluster_autoscaler: bool

    @property
    def keda(self) -> bool:
        return self.autoscaling.mode is AutoscalingMode.KEDA

    @property
    def service_name(self) -> str:
        """The Service in front of the pods: the model's own name, unless the interceptor's entry point holds it."""
        return self.name + BACKEND_SERVICE_SUFFIX if self.scales_to_zero else self.name

    @property
    def service_host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class GatewayRoute:
    """One model behind the gateway: the name clients send, and the host its traffic goes to."""

    model: str
    served_name: str
    # The model's Service, which for a model at zero is the interceptor's entry: the gateway sends that Host,
    # so the interceptor holds the first request and wakes the model, as it does for direct calls.
    backend_host: str
    through_interceptor: bool
    # The clients whose keys may call it.
    clients: tuple[str, ...]


@dataclass(frozen=True)
class GatewayClient:
    name: str
    # The served names it may call.
    served_names: tuple[str, ...]
    tokens_per_minute: int
    counts: TokenKind


@dataclass(frozen=True)
class GatewayPlan:
    exposure: Exposure
    # What clients connect to: 443 with TLS at the NLB, else 80.
    port: int
    scheme: str
    hostname: Optional[str]
    certificate_arn: Optional[str]
    allowed_source_cidrs: tuple[str, ...]
    direct_access: bool
    replicas: int
    routes: tuple[GatewayRoute, ...]
    clients: tuple[GatewayClient, ...]

    @property
    def load_balanced(self) -> bool:
        return self.exposure is not Exposure.CLUSTER


@dataclass(frozen=True)
class Plan:
    config: PlatformConfig
    models: tuple[ModelPlan, ...]
    pools: tuple[PoolPlan, ...]
    # What a valid config still deserves a word about at preview.
    notes: tuple[str, ...]
    # Where every Docker Hub image comes from, the models' and the platform's own.
    docker_hub_route: ImageRoute
    # The DCGM exporter and the GPU alerts run: some model is on GPUs, or the config says.
    runs_gpu_metrics: bool
    # Models with a revision stream from the S3 model cache, which the stack makes or names.
    caches_models: bool
    gateway: Optional[GatewayPlan] = None

    @property
    def namespace(self) -> str:
        return self.config.namespace

    @property
    def any_scales_to_zero(self) -> bool:
        return any(m.scales_to_zero for m in self.models)

    @property
    def runs_karpenter(self) -> bool:
        """A cluster this stack creates gets its GPU nodes from Karpenter; an existing one brings its own."""
        return self.config.cluster.existing is None

    @cached_property
    def _models_by_name(self) -> dict[str, ModelPlan]:
        return {m.name: m for m in self.models}

    def model(self, name: str) -> ModelPlan:
        # By name, not by a scan: every gateway route looks its model up, and a stack may hold hundreds.
        return self._models_by_name[name]
