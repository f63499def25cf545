"""Whether each model fits its pool, and if not, the ways out: from one set of numbers per model.

`ModelSizing` holds a model's numbers on its pool, computed once; the fit checks, the ways out, the
pool checks and the plan all read them, so a message can never disagree with what gets built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from vllm_platform.catalog import INSTANCE_TYPES, Gpu, InstanceType, allocatable_cpu_millis, allocatable_memory_mib, smallest
from vllm_platform.config.pools import GpuNodePool
from vllm_platform.config.models import TENSOR_PARALLEL_SIZES, Model, Quantization
from vllm_platform.config.quantities import cpu_millis, format_cpu, format_memory, memory_mib
from vllm_platform.plan import sizing


def parameters_billions(model: Model) -> Optional[float]:
    return model.parameters_billions or sizing.parameters_from_model_id(model.model)


def gpu_memory_utilization(model: Model) -> float:
    return model.gpu_memory_utilization or sizing.DEFAULT_GPU_MEMORY_UTILIZATION


def kv_cache_bytes_per_token(model: Model, params: float) -> int:
    return model.kv_cache_bytes_per_token or sizing.default_kv_cache_bytes_per_token(params)


@dataclass(frozen=True)
class ModelSizing:
    """A model's numbers on its pool's smallest type: parameters, pod resources and how its replicas pack."""

    model: Model
    pool: GpuNodePool
    instance: InstanceType
    parameters_billions: float
    pod: sizing.PodResources

    @property
    def replicas_per_node(self) -> int:
        return sizing.replicas_per_node(self.instance, self.model.tensor_parallel_size, self.pod)

    def nodes_for(self, replicas: int) -> int:
        """Nodes of its pool that `replicas` of the model occupy, packed among themselves."""
        return sizing.nodes_for_replicas(replicas, self.replicas_per_node)

    @property
    def fits_a_node(self) -> bool:
        return self.model.tensor_parallel_size <= self.instance.gpu_count


def configured_resources(model: Model) -> Optional[sizing.PodResources]:
    """The pod's resources as `models[].resources` gives them; None where the config leaves them to the plan."""
    if model.resources is None:
        return None
    return sizing.PodResources(cpu_millis=cpu_millis(model.resources.cpu), memory_mib=memory_mib(model.resources.memory))


def size(model: Model, pool: GpuNodePool) -> Optional[ModelSizing]:
    """The model's numbers on the pool; None when its size cannot be read."""
    params = parameters_billions(model)
    if params is None:
        return None
    instance = smallest(pool.instance_types)
    pod = configured_resources(model) or sizing.default_resources(instance, model.tensor_parallel_size)
    return ModelSizing(model, pool, instance, params, pod)


def gpu_fit(model: Model, params: float, gpu: Gpu, tensor_parallel: int, quantization: Optional[str]) -> sizing.GpuFit:
    sequence_kv_gb = 0.0
    if model.max_model_len:
        sequence_kv_gb = sizing.sequence_kv_cache_gb(kv_cache_bytes_per_token(model, params), model.max_model_len)
    return sizing.gpu_fit(params, quantization, tensor_parallel, gpu.memory_gb, gpu_memory_utilization(model), sequence_kv_gb)


# Quantizations a way out may suggest, best first: fp8 keeps quality closest to bf16; awq_marlin, not
# awq, because `awq` forces vLLM's slow AWQ kernel where Marlin runs (Ampere and newer: every catalog GPU).
SUGGESTED_QUANTIZATIONS = {Quantization.FP8: "FP8", Quantization.AWQ_MARLIN: "AWQ"}


def _checkpoint_advice(quantizations: list[str]) -> str:
    formats = " or ".join(SUGGESTED_QUANTIZATIONS[q] for q in quantizations)
    return f"an {formats} checkpoint (quantization {' or '.join(quantizations)})"


def _lighter_quantizations(model: Model) -> list[str]:
    current = sizing.BYTES_PER_PARAMETER[model.quantization]
    return [q for q in SUGGESTED_QUANTIZATIONS if sizing.BYTES_PER_PARAMETER[q] < current]


def _ways_out(sized: ModelSizing) -> list[str]:
    """Changes that each pass the fit check on their own, on this pool's GPU first, else on a larger one."""
    model, params, gpu, ways = sized.model, sized.parameters_billions, sized.instance.gpu, []
    wider = [tp for tp in TENSOR_PARALLEL_SIZES if tp > model.tensor_parallel_size]
    tp = next((tp for tp in wider if gpu_fit(model, params, gpu, tp, model.quantization).fits), None)
    if tp is not None and tp <= sized.instance.gpu_count:
        ways.append(f"set tensorParallelSize {tp}")
    elif tp is not None:
        host = min(
            (t for t in INSTANCE_TYPES.values() if t.gpu == gpu and t.gpu_count >= tp),
            key=lambda t: (t.gpu_count, t.on_demand_usd_per_hour),
        )
        ways.append(f"use tensorParallelSize {tp} on a pool of {host.name} ({host.gpu_count}x {gpu.model})")
    lighter = [q for q in _lighter_quantizations(model) if gpu_fit(model, params, gpu, model.tensor_parallel_size, q).fits]
    if lighter:
        ways.append(f"use {_checkpoint_advice(lighter)}")
    return ways or [_larger_gpu(sized)]


def _larger_gpu(sized: ModelSizing) -> str:
    """The cheapest catalog type of a larger GPU that holds the model on one node, and how."""
    model, params = sized.model, sized.parameters_billions
    larger = [t for t in INSTANCE_TYPES.values() if t.gpu.memory_gb > sized.instance.gpu.memory_gb]
    for instance in sorted(larger, key=lambda t: t.on_demand_usd_per_hour):
        for quantization in (model.quantization, *_lighter_quantizations(model)):
            for tp in (tp for tp in TENSOR_PARALLEL_SIZES if tp <= instance.gpu_count):
                if gpu_fit(model, params, instance.gpu, tp, quantization).fits:
                    how = f"move to a pool of {instance.name} ({instance.gpu_count}x {instance.gpu.model})"
                    how += f" with tensorParallelSize {tp}"
                    if quantization != model.quantization:
                        how += f" and {_checkpoint_advice([quantization])}"
                    return how
    return "no catalog type holds it on one node, even as a 4-bit checkpoint"


def gpu_fit_problems(sized: ModelSizing) -> list[str]:
    model, instance, params = sized.model, sized.instance, sized.parameters_billions
    where, tp = f"models[{model.name}]", model.tensor_parallel_size
    fit = gpu_fit(model, params, instance.gpu, tp, model.quantization)
    if fit.fits:
        return []
    ways = _ways_out(sized)
    holds = (
        f"a {instance.name} {instance.gpu.model} holds {instance.gpu.memory_gb:g} GB "
        f"(x{gpu_memory_utilization(model):.2f} = {fit.usable_per_gpu_gb:.1f} GB)"
    )
    if not fit.weights_fit:
        return [
            f"{where}: needs ~{fit.weights_per_gpu_gb:.1f} GB of weights per GPU "
            f"({params:g}B parameters, {model.quantization or 'bf16'}, tensorParallelSize {tp}) "
            f"plus {sizing.RUNTIME_OVERHEAD_GB + sizing.MIN_KV_CACHE_GB:.1f} GB for runtime and KV cache, "
            f"but {holds}; {', or '.join(ways)}"
        ]
    assert model.max_model_len is not None
    per_token = kv_cache_bytes_per_token(model, params)
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


def tensor_parallel_problems(model: Model, pool: GpuNodePool) -> list[str]:
    instance = smallest(pool.instance_types)
    if model.tensor_parallel_size <= instance.gpu_count:
        return []
    return [
        f"models[{model.name}].tensorParallelSize: {model.tensor_parallel_size} exceeds the {instance.gpu_count} GPU(s) "
        f"per {instance.name} node in pool {pool.name}; lower it or use a pool with more GPUs per node"
    ]


def resource_problems(sized: ModelSizing) -> list[str]:
    model, pool, instance = sized.model, sized.pool, sized.instance
    where, problems = f"models[{model.name}]", []
    # Karpenter may launch any type of the pool's list, so a pod must fit the smallest of them.
    larger = f"take {instance.name} out of the pool's instanceTypes" if len(pool.instance_types) > 1 else "use a larger type"
    if model.resources:
        cpu_limit, memory_limit = allocatable_cpu_millis(instance), allocatable_memory_mib(instance)
        if sized.pod.cpu_millis > cpu_limit:
            problems.append(
                f"{where}.resources.cpu: {model.resources.cpu} exceeds the {format_cpu(cpu_limit)} CPU "
                f"a {instance.name} in pool {pool.name} can allocate to one pod; lower it or {larger}"
            )
        if sized.pod.memory_mib > memory_limit:
            problems.append(
                f"{where}.resources.memory: {model.resources.memory} exceeds the {memory_limit}Mi "
                f"a {instance.name} in pool {pool.name} can allocate to one pod; lower it or {larger}"
            )
        floor = sizing.tensor_parallel_memory_floor_mib(model.tensor_parallel_size)
        if model.tensor_parallel_size > 1 and sized.pod.memory_mib < floor:
            problems.append(
                f"{where}.resources.memory: {model.resources.memory} is below the {format_memory(floor)} "
                f"tensorParallelSize {model.tensor_parallel_size} needs: the {format_memory(sizing.SHM_MIB)} "
                f"memory-backed /dev/shm counts against the limit, and vLLM's {model.tensor_parallel_size + 2} "
                f"processes take {format_memory(sizing.PROCESS_MEMORY_MIB)} each; raise it to "
                f"{format_memory(floor)} or more"
            )
    return problems


def node_disk_problems(sized: ModelSizing, streams: bool, existing: bool) -> list[str]:
    """The node disk a model's pods take with its image, against the disk that holds them, in one line each.

    An existing cluster's node group: the checkpoint a pod downloads from the hub, with the image and kubelet's
    files, on its root volume (a streamed model's few GiB are left to the node group). A created cluster's
    Karpenter nodes: the ephemeral-storage request of every replica a node holds, with the unpacked image, on the
    NVMe instance store, where the EC2NodeClass's RAID0 puts containerd's images and the pods' emptyDirs; checked on
    each type of the pool, since Karpenter may launch any of them."""
    model, pool = sized.model, sized.pool
    pod_disk = sizing.pod_disk_gib(streams, sized.parameters_billions, model.quantization)
    if existing:
        root = pool.root_volume(existing=True)
        disk = pod_disk + sizing.IMAGE_AND_SYSTEM_DISK_GIB
        if streams or disk <= root:
            return []
        return [
            f"models[{model.name}]: the checkpoint it downloads from the hub needs ~{disk} GiB of node disk with the image, "
            f"but pool {pool.name}'s nodes have rootVolumeGiB {root}; set cluster.gpuNodePools[{pool.name}].rootVolumeGiB "
            "to the node group's real root volume, or serve the model from S3 (an s3:// model, or modelCache.bucket)"
        ]
    for instance in (INSTANCE_TYPES[name] for name in pool.instance_types):
        replicas = sizing.replicas_per_node(instance, model.tensor_parallel_size, sized.pod)
        disk, store = replicas * pod_disk + sizing.VLLM_IMAGE_UNPACKED_GIB, sizing.instance_store_gib(instance)
        if disk > store:
            what = "its downloaded checkpoint" if not streams else "its config and caches"
            return [
                f"models[{model.name}]: {replicas} replica(s) per {instance.name} node request {pod_disk} GiB of "
                f"ephemeral-storage each ({what}), ~{disk} GiB with the unpacked image's {sizing.VLLM_IMAGE_UNPACKED_GIB}, "
                f"but a {instance.name}'s NVMe instance store, which holds the pods' disk and the images, is {store} GiB; "
                + (f"take {instance.name} out of " if len(pool.instance_types) > 1 else "use a type with more instance store in ")
                + f"cluster.gpuNodePools[{pool.name}].instanceTypes"
                + ("" if streams else ", or stream the model from the model cache (set its revision)")
            ]
    return []


def replica_problems(sized: ModelSizing) -> list[str]:
    model, pool = sized.model, sized.pool
    nodes_needed = sized.nodes_for(model.replicas.max)
    if not sized.fits_a_node or nodes_needed <= pool.max_size:
        return []
    return [
        f"models[{model.name}].replicas.max: {model.replicas.max} replicas of {model.tensor_parallel_size} GPU(s) need "
        f"{nodes_needed} {sized.instance.name} nodes, but pool {pool.name} has maxSize {pool.max_size}; "
        f"lower replicas.max or raise the pool's maxSize"
    ]


def model_problems(model: Model, pool: GpuNodePool, sized: Optional[ModelSizing]) -> list[str]:
    """Everything that keeps the model from running on its pool, each with its numbers and ways out."""
    problems = tensor_parallel_problems(model, pool)
    if sized is None:
        return [*problems, f"models[{model.name}].parametersBillions: cannot read the size from {model.model!r}; set parametersBillions"]
    return problems + gpu_fit_problems(sized) + resource_problems(sized) + replica_problems(sized)


def pool_demand(pool: GpuNodePool, sized: list[ModelSizing], at: Literal["min", "max"]) -> tuple[int, str]:
    """Nodes the pool's models need with each at replicas.min or .max, and each model's share.

    Each model's replicas pack among themselves and models are counted on nodes of their own: an
    upper bound, exact for one-GPU types, that may overcount where models could share a multi-GPU
    node. A model that fits no node of the pool is counted by its own check, not here.
    """
    shares = {
        s.model.name: (getattr(s.model.replicas, at), s.nodes_for(getattr(s.model.replicas, at)))
        for s in sized
        if s.fits_a_node
    }
    described = ", ".join(f"{name}: {replicas} replica(s) on {nodes} node(s)" for name, (replicas, nodes) in shares.items())
    return sum(nodes for _, nodes in shares.values()), described


def overcommitted_pools(
    pools: list[GpuNodePool], sized_on: dict[str, list[ModelSizing]], bound: Literal["min", "max"]
) -> list[tuple[GpuNodePool, int, str]]:
    """Pools whose models together, at replicas.`bound`, need more nodes than maxSize: (pool, nodes, who)."""
    found = []
    for pool in pools:
        # One model alone is held to the pool's maxSize at replicas.max by its own check.
        if len(sized_on.get(pool.name, [])) < 2:
            continue
        nodes, described = pool_demand(pool, sized_on[pool.name], bound)
        if nodes > pool.max_size:
            found.append((pool, nodes, described))
    return found


def warm_node_problems(pools: list[GpuNodePool], sized_on: dict[str, list[ModelSizing]]) -> list[str]:
    """Warm nodes come on top of the nodes the models hold at replicas.min, within the NodePool's limit."""
    problems = []
    for pool in pools:
        nodes, _ = pool_demand(pool, sized_on.get(pool.name, []), "min")
        if pool.warm_nodes and nodes + pool.warm_nodes > pool.max_size:
            problems.append(
                f"cluster.gpuNodePools[{pool.name}].warmNodes: {pool.warm_nodes} warm node(s) and the {nodes} its models "
                f"hold at replicas.min make {nodes + pool.warm_nodes}, above maxSize {pool.max_size}; Karpenter would "
                f"launch no warm node past the limit. Raise maxSize or lower warmNodes"
            )
    return problems


def pool_problems(pools: list[GpuNodePool], sized_on: dict[str, list[ModelSizing]]) -> list[str]:
    return warm_node_problems(pools, sized_on) + [
        f"cluster.gpuNodePools[{pool.name}].maxSize: {pool.max_size}, but its models at replicas.min "
        f"need {nodes} {smallest(pool.instance_types).name} nodes ({described}), so some replicas would stay Pending; "
        f"raise maxSize to {nodes} or lower the models' replicas.min"
        for pool, nodes, described in overcommitted_pools(pools, sized_on, "min")
    ]
