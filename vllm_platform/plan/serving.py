"""How each model is served: the command line vLLM (or the simulator) gets, and how long it may take to start,
drain and roll out. Pure functions of the validated config and the model's sizing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Optional

from vllm_platform.config.models import Model
from vllm_platform.contract import SERVING_PORT, minimum_grace_seconds, vllm_flags
from vllm_platform.plan import coldstart, sizing
from vllm_platform.plan.coldstart import ColdStart

MODEL_CACHE_PATH = "/models-cache"
# Long enough for the endpoints controller and kube-proxy on every node to stop routing to the pod
# before vLLM stops accepting connections.
PRESTOP_SLEEP_SECONDS = 10
TERMINATION_MARGIN_SECONDS = 5
# Image pull and process start on top of a simulated model's load phase.
SIMULATED_START_MARGIN_SECONDS = 120
STREAMED_LOAD_FORMAT = "runai_streamer"


def streamer_config(pod_memory_mib: int, tensor_parallel: int, readers: int) -> dict[str, object]:
    """The Run:ai streamer's settings (vLLM 0.31 takes exactly `concurrency`, `distributed` and `memory_limit`)."""
    return {
        # Readers (S3 clients) per streaming process, sized to the pod's link.
        "concurrency": readers,
        # With tensor parallelism each worker streams its share once and passes it on over NVLink or PCIe,
        # instead of every worker reading the whole checkpoint: S3 moves it once, not tensorParallelSize times.
        "distributed": tensor_parallel > 1,
        # The CPU staging buffer, per process: a quarter of the pod's memory among its workers. The streamer's
        # default (40 GB, or no limit when distributed) outgrows a g5's pod.
        "memory_limit": pod_memory_mib * 2**20 // (4 * tensor_parallel),
    }


def vllm_args(model: Model, streamer: Optional[dict[str, object]], from_hub: bool) -> tuple[str, ...]:
    """vLLM's flags after `vllm serve --model <weights>`: the weights' URI is the builder's to place, since the
    stack's own cache bucket is named only when it is created. `streamer` is set where the weights stream from S3;
    `from_hub` where vLLM downloads them from the Hugging Face hub itself."""
    args = [
        vllm_flags.SERVED_MODEL_NAME, model.effective_served_name,
        vllm_flags.PORT, str(SERVING_PORT),
        vllm_flags.TENSOR_PARALLEL, str(model.tensor_parallel_size),
        vllm_flags.SHUTDOWN_TIMEOUT, str(model.shutdown_timeout_seconds),
    ]  # fmt: skip
    if streamer is None:
        args += [vllm_flags.DOWNLOAD_DIR, MODEL_CACHE_PATH]
    if from_hub and model.revision:
        # The commit the config pins: without it vLLM takes the hub's main. The tokenizer's too, unless extraArgs
        # takes it from another repository, where that commit does not exist.
        args += [vllm_flags.REVISION, model.revision]
        if vllm_flags.value(model.extra_args, vllm_flags.TOKENIZER) is None:
            args += [vllm_flags.TOKENIZER_REVISION, model.revision]
    if model.quantization:
        args += [vllm_flags.QUANTIZATION, model.quantization]
    # Unset, vLLM would take the checkpoint's full context (128k for Llama 3.1), refuse to start when one
    # such sequence does not fit the KV cache, and crash-loop; `auto` fits the context to the memory there is.
    args += [vllm_flags.MAX_MODEL_LEN, str(model.max_model_len) if model.max_model_len else "auto"]
    if model.gpu_memory_utilization:
        args += [vllm_flags.GPU_MEMORY_UTILIZATION, f"{model.gpu_memory_utilization:g}"]
    if streamer is not None and vllm_flags.value(model.extra_args, vllm_flags.LOAD_FORMAT) is None:
        args += [vllm_flags.LOAD_FORMAT, STREAMED_LOAD_FORMAT]
    if streamer is not None and vllm_flags.value(model.extra_args, vllm_flags.MODEL_LOADER_EXTRA_CONFIG) is None:
        args += [vllm_flags.MODEL_LOADER_EXTRA_CONFIG, json.dumps(streamer, separators=(",", ":"))]
    return (*args, *model.extra_args)


def simulator_args(model: Model, parameters_billions: Optional[float]) -> tuple[str, ...]:
    """Flags that make the simulator answer like the configured model: its served name, context and latency."""
    timing = sizing.simulated_timing(parameters_billions, model.tensor_parallel_size)
    # A name the simulator cannot find on the hub keeps it from downloading a tokenizer at start. It takes
    # vLLM's spelling of the flags it shares with vLLM.
    args = [
        vllm_flags.MODEL, f"simulated-{model.name}",
        vllm_flags.SERVED_MODEL_NAME, model.effective_served_name,
        vllm_flags.PORT, str(SERVING_PORT),
        "--mode", "random",
        "--time-to-first-token", f"{timing.time_to_first_token_ms}ms",
        "--inter-token-latency", f"{timing.inter_token_latency_ms}ms",
    ]  # fmt: skip
    if model.max_model_len:
        args += [vllm_flags.MAX_MODEL_LEN, str(model.max_model_len)]
    return tuple(args)


def startup_budget_seconds(model: Model, parameters_billions: Optional[float], cold: Optional[ColdStart]) -> int:
    """How long the startup probe waits for the model to load: configured, or the estimate of the weights and the
    engine's start with its safety factor (the simulator: its load phase and a margin)."""
    if model.startup_timeout_seconds:
        return model.startup_timeout_seconds
    if cold is None:
        load = sizing.simulated_timing(parameters_billions, model.tensor_parallel_size).load_seconds
        return load + SIMULATED_START_MARGIN_SECONDS
    return sizing.probe_periods(coldstart.with_safety(cold.from_node_seconds))


def termination_grace_seconds(model: Model) -> int:
    return int(minimum_grace_seconds(PRESTOP_SLEEP_SECONDS, model.shutdown_timeout_seconds)) + TERMINATION_MARGIN_SECONDS


@dataclass(frozen=True)
class RollingStep:
    """One wave of a Deployment's rolling update: how many pods above and below the desired count it may have."""

    max_surge: int
    max_unavailable: int

    def manifest(self) -> dict[str, int]:
        return {"maxSurge": self.max_surge, "maxUnavailable": self.max_unavailable}


def rolling_update(surge_room: bool) -> RollingStep:
    """A new replica before an old one goes, where the pool has a node for it; else one at a time in place.

    A surge pod the pool cannot place stays Pending and the rollout never finishes.
    """
    return RollingStep(max_surge=1, max_unavailable=0) if surge_room else RollingStep(max_surge=0, max_unavailable=1)


def rollout_timeout_seconds(max_replicas: int, step: RollingStep, wave_seconds: int) -> int:
    """How long `pulumi up` waits for the Deployment: every wave of the rolling update, one after another.

    At replicas.max, since the autoscaler may hold the model there when a rollout comes.
    """
    waves = math.ceil(max_replicas / max(step.max_surge, step.max_unavailable))
    return waves * wave_seconds
