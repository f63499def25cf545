"""How long a new replica takes to serve, per model, from the bytes it moves and the rates it moves them at.

Four phases: the node's boot (from zero only), the image pull (where the node does not hold the image yet;
parallel only on nodes the program turns it on for), the weights (streamed from S3, or downloaded from the hub
and read back), and the engine's start (CUDA context, torch.compile, CUDA graphs, KV cache; by the model's size
and its tensor parallelism). Every figure
comes from `CONSTANTS`, each named, dated and sourced; none is faster than its bytes over its bandwidth. The
startup probe's budget and the rollouts' timeouts are this estimate times `SAFETY_FACTOR`, so they follow from it instead of being guessed apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vllm_platform.catalog import InstanceType
from vllm_platform.pins import DEFAULT_VLLM_IMAGE
from vllm_platform.plan.delivery import WeightsSource


@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    # The date of the source: a document's, a measurement's, a commit's.
    date: str
    source: str
    what: str


# Where the image-pull reference was measured: the blueprint's NodePools take c, m and r instances only, its workload
# asks for more than 8000 Mbps of network and of EBS bandwidth (karpenter.k8s.aws/instance-network-bandwidth and
# instance-ebs-bandwidth Gt 8000), and its EC2NodeClass gives the root gp3 volume 1000 MiB/s and 16000 IOPS.
PULL_REFERENCE_NODES = (
    "measured on c/m/r instances with more than 8000 Mbps of network and EBS bandwidth and a 1000 MiB/s, 16000 IOPS "
    "gp3 root volume, not on a GPU node: the g5 and p4d figures scaled from it are estimates to be measured "
    "(kubelet's \"Successfully pulled image ... in\" event on one of the pools' nodes)"
)
PINNED_VLLM_TAG = DEFAULT_VLLM_IMAGE.rpartition(":")[2]

CONSTANTS: dict[str, Constant] = {
    "VLLM_IMAGE_BYTES": Constant(
        12.64e9, "bytes", "2025-10-18",
        "vllm-project/vllm#27154, discuss.vllm.ai: \"current vLLM docker image size is 12.64GB\": vllm/vllm-openai:latest "
        f"of that date, an earlier release than the pinned {PINNED_VLLM_TAG}, whose size is unmeasured here (the layer "
        "sizes `docker manifest inspect` lists for it sum to its own)",
        "the vllm/vllm-openai image, compressed, as a pull moves it: a release earlier than the pinned tag's",
    ),
    "PULL_REFERENCE_BYTES": Constant(
        9.354342327e9, "bytes", "2026-06-03",
        "aws-samples/karpenter-blueprints@be1fe4f, SOCI parallel pull blueprint (kubelet's \"Image size\")",
        "the AWS vLLM container image those pulls measured",
    ),
    "PULL_REFERENCE_PARALLEL_SECONDS": Constant(
        39.55, "s", "2026-06-03",
        f"aws-samples/karpenter-blueprints@be1fe4f: SOCI parallel pull on AL2023, {PULL_REFERENCE_NODES}",
        "that image pulled and unpacked with nodeadm's FastImagePull",
    ),
    "PULL_REFERENCE_DEFAULT_SECONDS": Constant(
        130.8, "s", "2026-06-03",
        f"aws-samples/karpenter-blueprints@be1fe4f: containerd's default pull, {PULL_REFERENCE_NODES}",
        "the same image without parallel pull",
    ),
    "PARALLEL_PULL_MIN_VCPU": Constant(
        8, "vCPU", "2025-08-19",
        "awslabs/amazon-eks-ami nodeadm/doc/examples.md, \"Enabling fast image pull\": \"we recommend a 2xlarge instance or larger\"",
        "the smallest size the estimate counts parallel pull on (nodeadm enables it from 4 vCPU and 7 GiB)",
    ),
    "NODE_BOOT_SECONDS": Constant(
        90, "s", "2022-02-16",
        "NVIDIA/k8s-device-plugin#291 (Karpenter, g5): \"Approximately 90 seconds later ... the k8s-device-plugin "
        "daemonset launches a pod and discovers the GPU resource\"; unmeasured on AL2023 (measure it with Karpenter's "
        "NodeClaim status transitions)",
        "from a NodeClaim to nvidia.com/gpu on the node",
    ),
    "KARPENTER_BATCH_IDLE_SECONDS": Constant(
        1, "s", "2026-08-20",
        "aws/karpenter-provider-aws@v1.14.1 website/content/en/docs/reference/settings.md, BATCH_IDLE_DURATION: "
        "\"The maximum amount of time with no new pending pods that if exceeded ends the current batching window\" "
        "(default = 1s), which the pinned chart keeps (settings.batchIdleDuration); pods that keep arriving stretch it "
        "to BATCH_MAX_DURATION, 10 s",
        "how long Karpenter waits for more pending pods before it asks for a node: a lone replica's wait for its NodeClaim",
    ),
    "FABRIC_MANAGER_WAIT_SECONDS": Constant(
        30, "s", "2026-05-12",
        "pytorch/ci-infra#552 (AL2023 NVIDIA AMI): the host fabric manager \"waits up to its 30 s GFM Wait Timeout\"",
        "what an NVSwitch node (p4d, p4de, p5) adds to its boot, at most",
    ),
    "S3_INSTANCE_GBPS": Constant(
        100, "Gbit/s", "2023-05-05",
        "Amazon S3 User Guide, \"Best practices design patterns: optimizing Amazon S3 performance\": up to 100 Gb/s on a single instance",
        "S3's throughput to one instance, at most",
    ),
    "S3_GETS_PER_PREFIX_PER_SECOND": Constant(
        5500, "requests/s", "2018-07-17",
        "Amazon S3 User Guide, \"Best practices design patterns: optimizing Amazon S3 performance\": at least 5,500 "
        "GET/HEAD requests per second per partitioned prefix (the rate announced on that date)",
        "what S3 serves one revision's prefix, in requests",
    ),
    "STREAMER_S3_CHUNK_BYTES": Constant(
        8 * 2**20, "bytes", "2024-09-30",
        "run-ai/runai-model-streamer@74e539b docs/src/env-vars.md, RUNAI_STREAMER_CHUNK_BYTESIZE: \"8388608 (=8MiB) "
        "when reading from object store e.g. S3\"",
        "what one streamer read asks S3 for",
    ),
    "STREAMER_LINK_EFFICIENCY": Constant(
        0.61, "ratio", "2025-05-08",
        "run-ai/runai-model-streamer@ccb9454 docs/src/benchmarks.md, Figure 5: Llama-3-8B (15 GB) from S3 in 4.88 s on a "
        "g5.12xlarge (40 Gbit/s)",
        "the share of the link the Run:ai streamer filled from S3 (24.6 of 40 Gbit/s)",
    ),
    "STREAMER_GBPS_PER_READER": Constant(
        1.25, "Gbit/s", "2025-05-08",
        "run-ai/runai-model-streamer@ccb9454 docs/src/benchmarks.md, Figure 5: best at concurrency 32 on 40 Gbit/s "
        "(4.88 s; 16: 8.45 s, 64: 5.01 s). 1.25 is that link over that concurrency, 40 / 32: the benchmark measured "
        "no single reader, and one reader alone may fill more or less than this",
        "the link per streamer reader (S3 client) where the benchmark was fastest: its link over its best concurrency, "
        "the ratio the readers are sized by, not what one reader fills",
    ),
    "STREAMER_READERS_MIN": Constant(
        8, "readers", "2025-06-19",
        "run-ai/runai-model-streamer@b29d43a docs/src/env-vars.md, RUNAI_STREAMER_CONCURRENCY: \"8 for reading from object storage\"",
        "the streamer's own default for object storage, the fewest readers a pod is given",
    ),
    "STREAMER_READERS_MAX": Constant(
        64, "readers", "2025-05-08",
        "run-ai/runai-model-streamer@ccb9454 docs/src/benchmarks.md, Figure 5: 64 readers no faster than 32",
        "the most the benchmark tried, the most readers a pod is given",
    ),
    "HUB_BYTES_PER_SECOND": Constant(
        263e6, "bytes/s", "2025-09-01",
        "Tensorfuse, \"Why vLLM cold starts are slow\": Llama-3.1-8B-Instruct downloaded in 61 s",
        "a download from the Hugging Face hub",
    ),
    "INTERNET_FULL_LINK_MIN_VCPU": Constant(
        32, "vCPU", "2023-05-11",
        "EC2 User Guide, \"Amazon EC2 instance network bandwidth\": instances with 32 vCPUs or more reach the "
        "internet through an internet gateway at their full bandwidth, or 50 % of it where that is above 5 Gbps",
        "the fewest vCPUs at which a node reaches the internet (the hub) at its own link's rate",
    ),
    "INTERNET_GBPS_BELOW_32_VCPU": Constant(
        5, "Gbit/s", "2023-05-11",
        "EC2 User Guide, \"Amazon EC2 instance network bandwidth\": through an internet gateway, instances with fewer "
        "than 32 vCPUs are limited to 5 Gbps",
        "what a node below 32 vCPUs reaches the internet (the hub) at",
    ),
    "LOCAL_LOAD_BYTES_PER_SECOND": Constant(
        485e6, "bytes/s", "2025-09-01",
        "Tensorfuse, \"Why vLLM cold starts are slow\": Llama-3.1-8B's weights loaded from local disk in 33 s",
        "reading a downloaded checkpoint back from the node's disk",
    ),
    "ENGINE_START_8B_SECONDS": Constant(
        50.9, "s", "2026-01-14",
        "vllm-project/vllm#32337, `vllm bench sweep startup`: Qwen3-8B, tensor parallel 1, cold, the whole start from "
        "the process to serving, its weights read from a local path included, so that they count here as well as in "
        "the weights phase (on the safe side; GPU not stated; unmeasured on A10G: measure with `vllm bench startup`)",
        "an 8B model's start, process, torch.compile, CUDA graphs and KV cache included",
    ),
    "ENGINE_START_70B_TP8_SECONDS": Constant(
        145, "s", "2025-06-19",
        "vllm-project/vllm#19824, a maintainer's measurement: Llama-70B-FP8, tensor parallel 8: Dynamo 15 s, "
        "torch.compile 70 s, CUDA graphs 60 s; those three phases only (its 10 s of weights from the page cache are the "
        "weights phase's here, and its 60 s P2P check is skipped since: VLLM_SKIP_P2P_CHECK defaults to 1; unmeasured "
        "on A100 with the pinned release)",
        "a 70B model's compile and CUDA graphs on 8 GPUs: ENGINE_PROCESS_START_SECONDS adds what it leaves out",
    ),
    "ENGINE_PROCESS_START_SECONDS": Constant(
        25, "s", "2025-06-30",
        "vllm-project/vllm#20264: \"init engine (profile, create kv cache, warmup model) took 34.11 seconds\" but "
        "\"the response is received after 59s in total\" (a small Llama 3.2, weights loaded in 0.9 s)",
        "what a start spends outside the engine's logged init (59 s less its 34 s): the processes, the API server, "
        "the weights' load; the 70B's measurement leaves these out, and its memory profiling and KV cache too, "
        "which are not counted here, so the figure is low",
    ),
    "ENGINE_START_PER_EXTRA_GPU_SECONDS": Constant(
        3.5, "s", "2025-09-03",
        "upb-cn/vllm-startup-profiler@9ef96f4 (MLSys 2026, \"Breaking the Ice: Analyzing Cold Start Latency in vLLM\"), "
        "vLLM 0.10.1.1, cold compile cache: Llama-2-13B, Llama-3.2-3B and Qwen-4B started 1.9, 3.8 and 4.9 s later at "
        "tensor parallel 2 (experiments/node5/examples/multi_gpu) than at 1 (model_size/uncached), weight loading excluded",
        "what each GPU beyond the first adds to the start (a worker process, its CUDA context, NCCL's setup); "
        "counted per GPU, not per doubling, since only 1 and 2 were measured",
    ),
    "SAFETY_FACTOR": Constant(
        3, "ratio", "2026-12-02", "vllm-platform's own choice",
        "the startup probe's budget and the rollout timeouts, over the estimate: room for a slow hub, a cold "
        "compile on a slower GPU, a node short of burst credits",
    ),
}  # fmt: skip


def c(name: str) -> float:
    return CONSTANTS[name].value


# Units, not estimates.
BITS_PER_BYTE, GIGA = 8, 1e9
# The sizes the two engine-start measurements were made at: ENGINE_START_8B_SECONDS (8B, tensor parallel 1) and
# ENGINE_START_70B_TP8_SECONDS (70B, tensor parallel 8).
SMALL_MEASURED_BILLIONS, LARGE_MEASURED_BILLIONS, LARGE_MEASURED_TENSOR_PARALLEL = 8, 70, 8


# The types whose GPUs are joined by NVSwitch (AWS's p4 and p5 instance pages), whose nodes start a fabric
# manager: FABRIC_MANAGER_WAIT_SECONDS is what that adds.
NVSWITCH_TYPES = ("p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge")


@dataclass(frozen=True)
class ColdStart:
    node_boot_seconds: int
    image_pull_seconds: int
    weights_seconds: int
    engine_start_seconds: int
    # The pool keeps warm nodes: a new replica preempts a placeholder on a node that holds the image.
    warm: bool

    @property
    def from_node_seconds(self) -> int:
        """From the pod scheduled on a running node that holds the image, to Ready."""
        return self.weights_seconds + self.engine_start_seconds

    @property
    def from_zero_seconds(self) -> int:
        """From the first replica asked for, with no node for it: the boot and the pull, unless a warm node waits."""
        return self.from_node_seconds if self.warm else self.cold_seconds

    @property
    def cold_seconds(self) -> int:
        """From zero with no warm node: what the rollout timeouts allow for, since warm nodes may all be taken."""
        return self.node_boot_seconds + self.image_pull_seconds + self.from_node_seconds

    def output(self) -> dict[str, object]:
        return {
            "fromNodeSeconds": self.from_node_seconds,
            "fromZeroSeconds": self.from_zero_seconds,
            "phases": {
                "nodeBoot": self.node_boot_seconds,
                "imagePull": self.image_pull_seconds,
                "weights": self.weights_seconds,
                "engineStart": self.engine_start_seconds,
            },
        }


def link_bytes_per_second(instance: InstanceType) -> float:
    return instance.pod_network_gbps * GIGA / BITS_PER_BYTE


def node_boot_seconds(instance: InstanceType) -> float:
    """From the replica pending to the GPU on its new node: Karpenter's batch window, then the node's boot."""
    fabric_manager = c("FABRIC_MANAGER_WAIT_SECONDS") if instance.name in NVSWITCH_TYPES else 0
    return c("KARPENTER_BATCH_IDLE_SECONDS") + c("NODE_BOOT_SECONDS") + fabric_manager


def parallel_pull(instance: InstanceType, fast_pull: bool) -> bool:
    """`fast_pull`: the node's NodeConfig turns on FastImagePull, as only the created cluster's EC2NodeClasses do
    (`vllm_platform.k8s.karpenter`); an existing cluster's nodes pull as their owner set them up, by default here."""
    return fast_pull and instance.vcpu >= c("PARALLEL_PULL_MIN_VCPU")


def image_pull_seconds(instance: InstanceType, fast_pull: bool) -> float:
    """The measured pull rate, with parallel pull where it is on and AWS recommends it; never above the link."""
    seconds = c("PULL_REFERENCE_PARALLEL_SECONDS" if parallel_pull(instance, fast_pull) else "PULL_REFERENCE_DEFAULT_SECONDS")
    measured = c("VLLM_IMAGE_BYTES") * seconds / c("PULL_REFERENCE_BYTES")
    return max(measured, c("VLLM_IMAGE_BYTES") / link_bytes_per_second(instance))


def streamed_bytes_per_second(instance: InstanceType) -> float:
    """What the streamer fills of the link, S3's limit for one instance, or S3's for the revision's one prefix."""
    gbps = min(instance.pod_network_gbps, c("S3_INSTANCE_GBPS")) * c("STREAMER_LINK_EFFICIENCY")
    per_prefix = c("S3_GETS_PER_PREFIX_PER_SECOND") * c("STREAMER_S3_CHUNK_BYTES")
    return min(gbps * GIGA / BITS_PER_BYTE, per_prefix)


def weights_seconds(instance: InstanceType, weights_bytes: float, source: WeightsSource) -> float:
    """Streamed from S3 at what the streamer fills of the link; from the hub, downloaded, then read back from disk."""
    if source is not WeightsSource.HUB:
        return weights_bytes / streamed_bytes_per_second(instance)
    full_link = instance.vcpu >= c("INTERNET_FULL_LINK_MIN_VCPU")
    internet = instance.pod_network_gbps if full_link else c("INTERNET_GBPS_BELOW_32_VCPU")
    download = weights_bytes / min(c("HUB_BYTES_PER_SECOND"), internet * GIGA / BITS_PER_BYTE)
    return download + weights_bytes / c("LOCAL_LOAD_BYTES_PER_SECOND")


def tensor_parallel_seconds(tensor_parallel: int) -> float:
    return (tensor_parallel - 1) * c("ENGINE_START_PER_EXTRA_GPU_SECONDS")


def engine_start_seconds(parameters_billions: float, tensor_parallel: int) -> float:
    """By the model's size, between the two measured starts (8B on 1 GPU whole, and 70B on 8 with the process
    start its measurement leaves out, less what its 7 extra GPUs added), plus what this model's extra GPUs add."""
    low = c("ENGINE_START_8B_SECONDS")
    large_extra_gpus = tensor_parallel_seconds(LARGE_MEASURED_TENSOR_PARALLEL)
    high = c("ENGINE_START_70B_TP8_SECONDS") + c("ENGINE_PROCESS_START_SECONDS") - large_extra_gpus
    per_billion = (high - low) / (LARGE_MEASURED_BILLIONS - SMALL_MEASURED_BILLIONS)
    by_size = max(low, low + (parameters_billions - SMALL_MEASURED_BILLIONS) * per_billion)
    return by_size + tensor_parallel_seconds(tensor_parallel)


def estimate(
    instance: InstanceType,
    weights_bytes: float,
    parameters_billions: float,
    tensor_parallel: int,
    source: WeightsSource,
    warm: bool,
    fast_pull: bool,
) -> ColdStart:
    """`fast_pull`: see `parallel_pull`."""
    return ColdStart(
        node_boot_seconds=math.ceil(node_boot_seconds(instance)),
        image_pull_seconds=math.ceil(image_pull_seconds(instance, fast_pull)),
        weights_seconds=math.ceil(weights_seconds(instance, weights_bytes, source)),
        engine_start_seconds=math.ceil(engine_start_seconds(parameters_billions, tensor_parallel)),
        warm=warm,
    )


def with_safety(seconds: float) -> int:
    return math.ceil(seconds * c("SAFETY_FACTOR"))


def streamer_readers(instance: InstanceType, processes: int) -> int:
    """Readers (S3 clients) per streaming process, as many per Gbit/s of the pod's link as the benchmark's fastest run
    had (STREAMER_GBPS_PER_READER), among `processes` that share the link."""
    wanted = math.ceil(min(instance.pod_network_gbps, c("S3_INSTANCE_GBPS")) / c("STREAMER_GBPS_PER_READER") / processes)
    return min(int(c("STREAMER_READERS_MAX")), max(int(c("STREAMER_READERS_MIN")), wanted))
