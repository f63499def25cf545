"""Pure arithmetic behind the fit checks, default resources and probe budgets.

Units: GPU memory and weights in decimal GB (1e9 bytes), as GPU vendors and parameter counts use;
Kubernetes memory in MiB, as quantities use.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from vllm_platform.catalog import InstanceType, allocatable_cpu_millis, allocatable_memory_mib
from vllm_platform.config.models import Quantization
from vllm_platform.contract import STARTUP_PROBE_PERIOD_SECONDS

DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# 4-bit formats store 0.5 bytes per weight plus group scales and zero points; 0.6 covers
# AWQ/GPTQ group size 128 with the unquantised embeddings and head of a typical checkpoint.
FOUR_BIT_BYTES_PER_PARAMETER = 0.6
BYTES_PER_PARAMETER: dict[Quantization | None, float] = {
    None: 2.0,
    Quantization.FP8: 1.0,
    # compressed-tensors checkpoints are int8/fp8 (1 byte) or 4-bit; assume the larger so a fit never lies.
    Quantization.COMPRESSED_TENSORS: 1.0,
    Quantization.AWQ: FOUR_BIT_BYTES_PER_PARAMETER,
    Quantization.AWQ_MARLIN: FOUR_BIT_BYTES_PER_PARAMETER,
    Quantization.GPTQ: FOUR_BIT_BYTES_PER_PARAMETER,
    Quantization.GPTQ_MARLIN: FOUR_BIT_BYTES_PER_PARAMETER,
}

# Per GPU, besides the weights: CUDA context, activations and CUDA graphs. Without maxModelLen vLLM
# fits the context to the KV cache there is (`--max-model-len auto`), so require only enough for one
# 8k-token sequence of an 8B GQA model (about 1 GB); below that a server is no use.
RUNTIME_OVERHEAD_GB = 1.5
MIN_KV_CACHE_GB = 1.0

# vLLM's default kv-cache-dtype (auto) keeps the model's 16-bit dtype, quantized weights or not.
KV_CACHE_BYTES_PER_VALUE = 2
# A checkpoint's config is not read offline, so the KV cache per token is estimated from its size: the
# layers of the smallest reference dense model at least that large, each with grouped-query attention
# of 8 KV heads x 128 dims (num_hidden_layers, num_key_value_heads, head_dim in each model's config.json
# on the Hugging Face hub): Llama-3.1-8B 32 layers, Qwen2.5-14B 48, Qwen2.5-32B 64, Llama-3.1-70B and
# Qwen2.5-72B 80, Llama-3.1-405B 126 (and anything larger). Rounding up to the next reference keeps it
# conservative for that family. Multi-head attention (Llama 2, Phi-3), wider heads (Gemma 2) or an fp8 KV cache differ, and
# a mixture of experts' id counts every expert: kvCacheBytesPerToken overrides the estimate for those.
DEFAULT_KV_HEADS = 8
DEFAULT_HEAD_DIM = 128
_REFERENCE_LAYERS = ((8, 32), (14, 48), (32, 64), (72, 80), (405, 126))


def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int) -> int:
    """A key and a value per layer and KV head."""
    return 2 * layers * kv_heads * head_dim * KV_CACHE_BYTES_PER_VALUE


def default_kv_cache_bytes_per_token(parameters_billions: float) -> int:
    layers = next((n for size, n in _REFERENCE_LAYERS if parameters_billions <= size), _REFERENCE_LAYERS[-1][1])
    return kv_cache_bytes_per_token(layers, DEFAULT_KV_HEADS, DEFAULT_HEAD_DIM)


def sequence_kv_cache_gb(bytes_per_token: int, tokens: int) -> float:
    """The KV cache of one sequence of `tokens`, over all GPUs of the model."""
    return bytes_per_token * tokens / 1e9


def tokens_fitting(kv_cache_per_gpu_gb: float, bytes_per_token: int, tensor_parallel: int) -> int:
    """The longest sequence whose KV cache fits, rounded down to a multiple of 1024 tokens."""
    tokens = math.floor(kv_cache_per_gpu_gb * 1e9 * tensor_parallel / bytes_per_token)
    return tokens // 1024 * 1024


_SIZE_IN_NAME = re.compile(r"(?<![A-Za-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)[bB](?![A-Za-z0-9])")


def parameters_from_model_id(model_id: str) -> float | None:
    """Billions of parameters as written in a model id ("Llama-3.1-8B" -> 8, "Mixtral-8x7B" -> 56)."""
    matches = _SIZE_IN_NAME.findall(model_id.rsplit("/", 1)[-1]) or _SIZE_IN_NAME.findall(model_id)
    if not matches:
        return None
    experts, size = matches[-1]
    return float(size) * (int(experts) if experts else 1)


def weights_gb(parameters_billions: float, quantization: str | None) -> float:
    return parameters_billions * BYTES_PER_PARAMETER[quantization]


def weights_per_gpu_gb(parameters_billions: float, quantization: str | None, tensor_parallel: int) -> float:
    return weights_gb(parameters_billions, quantization) / tensor_parallel


def usable_gpu_memory_gb(gpu_memory_gb: float, utilization: float) -> float:
    return gpu_memory_gb * utilization


@dataclass(frozen=True)
class GpuFit:
    weights_per_gpu_gb: float
    # One maxModelLen sequence's share; its KV heads split across the tensor-parallel GPUs, exactly
    # so while tensor parallel is at most the model's KV heads (8 for the estimate).
    kv_cache_per_gpu_gb: float
    usable_per_gpu_gb: float

    @property
    def kv_room_per_gpu_gb(self) -> float:
        """What the weights and the runtime leave for KV cache."""
        return self.usable_per_gpu_gb - self.weights_per_gpu_gb - RUNTIME_OVERHEAD_GB

    @property
    def required_per_gpu_gb(self) -> float:
        return self.weights_per_gpu_gb + RUNTIME_OVERHEAD_GB + max(MIN_KV_CACHE_GB, self.kv_cache_per_gpu_gb)

    @property
    def weights_fit(self) -> bool:
        return self.kv_room_per_gpu_gb >= MIN_KV_CACHE_GB

    @property
    def fits(self) -> bool:
        return self.required_per_gpu_gb <= self.usable_per_gpu_gb


def gpu_fit(
    parameters_billions: float,
    quantization: str | None,
    tensor_parallel: int,
    gpu_memory_gb: float,
    utilization: float,
    sequence_kv_gb: float = 0.0,
) -> GpuFit:
    return GpuFit(
        weights_per_gpu_gb=weights_per_gpu_gb(parameters_billions, quantization, tensor_parallel),
        kv_cache_per_gpu_gb=sequence_kv_gb / tensor_parallel,
        usable_per_gpu_gb=usable_gpu_memory_gb(gpu_memory_gb, utilization),
    )


def probe_periods(seconds: int) -> int:
    """`seconds` rounded up to whole startup-probe periods."""
    return math.ceil(seconds / STARTUP_PROBE_PERIOD_SECONDS) * STARTUP_PROBE_PERIOD_SECONDS


# What the vLLM image and kubelet's own files take on a node's root volume, where the checkpoint is downloaded
# beside them (an existing cluster's node group).
IMAGE_AND_SYSTEM_DISK_GIB = 40
# The vLLM image unpacked on a node's disk: "Size of official out-of-the-box `vllm-openai:latest` docker image:
# `28.6 GB`" (vllm-project/vllm#22377, 2025-12-10; the docker CLI counts GB of 10^9 bytes). An earlier release than
# the pinned tag, whose size is unmeasured here. The compressed layers containerd keeps beside it where parallel pull
# (which discards them on AL2023) is off are not counted.
VLLM_IMAGE_UNPACKED_BYTES = 28.6e9
VLLM_IMAGE_UNPACKED_GIB = math.ceil(VLLM_IMAGE_UNPACKED_BYTES / 2**30)


def model_cache_gib(parameters_billions: float, quantization: str | None) -> int:
    """Disk the downloaded checkpoint needs, with 10% for tokenizer, configs and partial downloads."""
    return math.ceil(weights_gb(parameters_billions, quantization) * 1e9 * 1.1 / 2**30)


@dataclass(frozen=True)
class SimulatedTiming:
    load_seconds: int
    time_to_first_token_ms: int
    inter_token_latency_ms: int


# Sizes the simulator imitates when a simulated model names none: the common 8B class.
SIMULATED_DEFAULT_BILLIONS = 8.0


def simulated_timing(parameters_billions: float | None, tensor_parallel: int) -> SimulatedTiming:
    """Latencies in the range vLLM shows on A10G/A100 for this size, and a short, size-scaled load phase.

    The load phase is capped at a minute: a simulated stack is for exercising the path, not for waiting.
    """
    billions = parameters_billions or SIMULATED_DEFAULT_BILLIONS
    return SimulatedTiming(
        load_seconds=min(60, 5 + round(billions / 2)),
        time_to_first_token_ms=round(40 + 4 * billions / tensor_parallel),
        inter_token_latency_ms=round(8 + 1.5 * billions / tensor_parallel),
    )


# A streamed model's pod keeps only its config, tokenizer and torch.compile cache on disk.
STREAMED_DISK_GIB = 10


def pod_disk_gib(streams: bool, parameters_billions: float, quantization: str | None) -> int:
    """The model pod's ephemeral-storage request: what a streamed model keeps on disk, or the downloaded checkpoint."""
    return STREAMED_DISK_GIB if streams else model_cache_gib(parameters_billions, quantization)


def instance_store_gib(instance: InstanceType) -> int:
    """The node's NVMe instance store in GiB (AWS gives it in GB), which a RAID0 over its disks holds whole."""
    return math.floor(instance.local_nvme_gb * 1e9 / 2**30)


@dataclass(frozen=True)
class PodResources:
    cpu_millis: int
    memory_mib: int


def default_resources(instance: InstanceType, tensor_parallel: int) -> PodResources:
    """A vLLM pod's share of a node: its fraction of the GPUs, of whole CPUs, and 3/4 of memory.

    The memory share leaves room for the page cache that safetensors loading goes through.
    """
    share = tensor_parallel / instance.gpu_count
    cpu_cores = max(1, math.floor(allocatable_cpu_millis(instance) * share / 1000))
    memory_gib = max(4, math.floor(instance.memory_gib * share * 0.75))
    memory_mib = min(memory_gib * 1024, math.floor(allocatable_memory_mib(instance) * share))
    return PodResources(cpu_millis=cpu_cores * 1000, memory_mib=memory_mib)


def replicas_per_node(instance: InstanceType, tensor_parallel: int, pod: PodResources) -> int:
    """How many of a model's pods one node holds, by GPUs, CPU and memory; at least one, as a pod that
    fits no node is refused by the node fit check."""
    return max(
        1,
        min(
            instance.gpu_count // tensor_parallel,
            allocatable_cpu_millis(instance) // pod.cpu_millis,
            allocatable_memory_mib(instance) // pod.memory_mib,
        ),
    )


def nodes_for_replicas(replicas: int, per_node: int) -> int:
    """Nodes that `replicas` pods occupy, `per_node` to a node; a pod never spans nodes."""
    return math.ceil(replicas / per_node)


# With tensor parallel > 1 the pod mounts a memory-backed /dev/shm for NCCL, whose pages count against
# the container's memory limit. Beside it: vLLM's API server, its engine core and one worker per GPU,
# each holding torch and a CUDA context in host memory.
SHM_MIB = 8 * 1024
PROCESS_MEMORY_MIB = 2 * 1024


def tensor_parallel_memory_floor_mib(tensor_parallel: int) -> int:
    """The least memory limit a pod of `tensor_parallel` > 1 GPUs may have: a full /dev/shm plus its processes."""
    return SHM_MIB + PROCESS_MEMORY_MIB * (tensor_parallel + 2)
