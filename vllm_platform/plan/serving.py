"""How each model is served: the command line vLLM (or the simulator) gets, and how long it may take to start,
drain and roll out. Pure functions of the validated config and the model's sizing."""

from __future__ import annotations

import math
from typing import Optional

from vllm_platform.config.models import Model
from vllm_platform.contract import SERVING_PORT, minimum_grace_seconds, vllm_flags
from vllm_platform.plan import sizing

MODEL_CACHE_PATH = "/models-cache"
# Long enough for the endpoints controller and kube-proxy on every node to stop routing to the pod
# before vLLM stops accepting connections.
PRESTOP_SLEEP_SECONDS = 10
TERMINATION_MARGIN_SECONDS = 5
# Image pull and process start on top of a simulated model's load phase.
SIMULATED_START_MARGIN_SECONDS = 120
STREAMED_LOAD_FORMAT = "runai_streamer"


def vllm_args(model: Model) -> tuple[str, ...]:
    args = [
        "--model", model.model,
        "--served-model-name", model.effective_served_name,
        "--port", str(SERVING_PORT),
        "--tensor-parallel-size", str(model.tensor_parallel_size),
        "--download-dir", MODEL_CACHE_PATH,
        vllm_flags.SHUTDOWN_TIMEOUT, str(model.shutdown_timeout_seconds),
    ]  # fmt: skip
    if model.quantization:
        args += ["--quantization", model.quantization]
    # Unset, vLLM would take the checkpoint's full context (128k for Llama 3.1), refuse to start when one
    # such sequence does not fit the KV cache, and crash-loop; `auto` fits the context to the memory there is.
    args += ["--max-model-len", str(model.max_model_len) if model.max_model_len else "auto"]
    if model.gpu_memory_utilization:
        args += ["--gpu-memory-utilization", f"{model.gpu_memory_utilization:g}"]
    if model.weights_bucket and vllm_flags.value(model.extra_args, vllm_flags.LOAD_FORMAT) is None:
        args += [vllm_flags.LOAD_FORMAT, STREAMED_LOAD_FORMAT]
    return (*args, *model.extra_args)


def simulator_args(model: Model, parameters_billions: Optional[float]) -> tuple[str, ...]:
    """Flags that make the simulator answer like the configured model: its served name, context and latency."""
    timing = sizing.simulated_timing(parameters_billions, model.tensor_parallel_size)
    # A name the simulator cannot find on the hub keeps it from downloading a tokenizer at start.
    args = [
        "--model", f"simulated-{model.name}",
        "--served-model-name", model.effective_served_name,
        "--port", str(SERVING_PORT),
        "--mode", "random",
        "--time-to-first-token", f"{timing.time_to_first_token_ms}ms",
        "--inter-token-latency", f"{timing.inter_token_latency_ms}ms",
    ]  # fmt: skip
    if model.max_model_len:
        args += ["--max-model-len", str(model.max_model_len)]
    return tuple(args)


def startup_budget_seconds(model: Model, parameters_billions: Optional[float], simulated: bool) -> int:
    """How long the startup probe waits for the model to load: configured, or sized to its weights."""
    if model.startup_timeout_seconds:
        return model.startup_timeout_seconds
    if simulated:
        load = sizing.simulated_timing(parameters_billions, model.tensor_parallel_size).load_seconds
        return load + SIMULATED_START_MARGIN_SECONDS
    assert parameters_billions is not None
    return sizing.startup_budget_seconds(parameters_billions, model.quantization)


def termination_grace_seconds(model: Model) -> int:
    return int(minimum_grace_seconds(PRESTOP_SLEEP_SECONDS, model.shutdown_timeout_seconds)) + TERMINATION_MARGIN_SECONDS


def rolling_update(surge_room: bool) -> dict[str, int]:
    """A new replica before an old one goes, where the pool has a node for it; else one at a time in place.

    A surge pod the pool cannot place stays Pending and the rollout never finishes.
    """
    return {"maxSurge": 1, "maxUnavailable": 0} if surge_room else {"maxSurge": 0, "maxUnavailable": 1}


def rollout_timeout_seconds(max_replicas: int, step: dict[str, int], wave_seconds: int) -> int:
    """How long `pulumi up` waits for the Deployment: every wave of the rolling update, one after another.

    At replicas.max, since the autoscaler may hold the model there when a rollout comes.
    """
    waves = math.ceil(max_replicas / max(step["maxSurge"], step["maxUnavailable"]))
    return waves * wave_seconds
