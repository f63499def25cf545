"""`models[]`: one entry per served model, with its autoscaling and resources."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Optional

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationInfo, field_validator, model_validator

from vllm_platform.config.base import DNS_1035_LABEL, S3_BUCKET_NAME, Section, check_label, check_ordered, check_pattern
from vllm_platform.config.quantities import cpu_millis, memory_mib
from vllm_platform.contract import images, vllm_flags, vllm_parser
from vllm_platform.pins import DEFAULT_VLLM_IMAGE

# huggingface_hub's validate_repo_id (utils/_validators.py): `namespace/name`, each of letters, digits and
# `_ . -` starting and ending with a letter, digit or `_`, the name at most 96 characters; no `--` or `..`,
# no `.git` at the end. In ASCII only: the hub's `\w` would admit look-alike letters it then never finds.
HF_MODEL_ID = re.compile(r"(?!.*(--|\.\.))(?!.*\.git$)\w(?:[\w.-]*\w)?/(?=[\w.-]{1,96}$)\w(?:[\w.-]*\w)?", re.ASCII)
# Bucket names as S3 names them (3 to 63 of lower-case letters, digits, `.` and `-`, no `..`); a key
# prefix of letters, digits and `. _ / -` only, since it becomes the Resource of an IAM policy (where `*`
# and `?` are wildcards) and a vLLM argument. Segments are never `.` or `..`, and never empty.
S3_URI = re.compile(
    rf"s3://(?!.*\.\.){S3_BUCKET_NAME}(?:/(?:(?!\.\.?(?:/|$))[A-Za-z0-9._-]+/)*(?:(?!\.\.?$)[A-Za-z0-9._-]+)?)?",
    re.ASCII,
)
# A Hugging Face commit: the 40 hex digits of a git SHA-1, which a branch or tag name never is.
HF_REVISION = re.compile(r"[0-9a-f]{40}", re.ASCII)
# Served names go into argv, PromQL label matchers and the simulator's shell line: no quotes, spaces or `$`.
SERVED_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}", re.ASCII)
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
# Bounds on what reaches Kubernetes' int32 fields (a Deployment's replicas, a probe's threshold, a ScaledObject's
# target), well inside them: a config past them is a typo, and the API server would refuse it only at `pulumi up`.
MAX_REPLICAS = 1000
MAX_PER_REPLICA_TARGET = 100_000
MAX_STARTUP_SECONDS = 86_400
# The largest checkpoint the fit checks size, in billions of parameters: beyond it the arithmetic overflows.
MAX_PARAMETERS_BILLIONS = 10_000
# extraArgs land in the Deployment's argv: far more than any flag needs, and few enough that a refusal quotes
# no more than a line of them.
MAX_EXTRA_ARGS, MAX_EXTRA_ARG_LENGTH = 200, 8192
# The least a vLLM pod can start with: its API server alone takes more.
MIN_CPU_MILLIS, MIN_MEMORY_MIB = 100, 256


class Quantization(StrEnum):
    AWQ = "awq"
    AWQ_MARLIN = "awq_marlin"
    GPTQ = "gptq"
    GPTQ_MARLIN = "gptq_marlin"
    FP8 = "fp8"
    COMPRESSED_TENSORS = "compressed-tensors"


class Replicas(Section):
    min: StrictInt = Field(1, ge=0, le=MAX_REPLICAS, description="replicas at least; `0` scales to zero (see \"Scale to zero\")")
    max: StrictInt = Field(1, ge=1, le=MAX_REPLICAS, description=f"replicas at most, {MAX_REPLICAS} at most")

    @model_validator(mode="after")
    def _ordered(self) -> "Replicas":
        check_ordered(self.min, self.max, ("min", "max"))
        return self


class AutoscalingMode(StrEnum):
    KEDA = "keda"
    HPA_CPU = "hpa-cpu"


class Autoscaling(Section):
    mode: AutoscalingMode = Field(
        AutoscalingMode.KEDA,
        description=(
            "`keda`: KEDA on `vllm:num_requests_waiting`; `hpa-cpu`: an autoscaling/v2 HPA on CPU "
            "(`targetCpuUtilizationPercent`; needs metrics-server, which a created cluster gets), never to zero. "
            "`none` is refused: every model gets an autoscaler (a policy of the pack); for a fixed count keep `keda` "
            "with `replicas.min = replicas.max`"
        ),
    )
    queue_depth_per_replica: StrictInt = Field(10, ge=1, le=MAX_PER_REPLICA_TARGET, description="waiting requests per replica the KEDA trigger aims for")
    target_cpu_utilization_percent: StrictInt = Field(70, ge=10, le=100, description="with `hpa-cpu`: the CPU utilisation it aims for")
    # With replicas.min 0: requests in flight per replica, as the KEDA HTTP add-on's interceptor counts them.
    concurrency_per_replica: StrictInt = Field(
        64, ge=1, le=MAX_PER_REPLICA_TARGET, description="with `replicas.min: 0`: requests in flight per replica as the HTTP add-on's interceptor counts them"
    )
    # With replicas.min 0: idle time before the last replica goes. A cold start costs a node and minutes of loading.
    scale_to_zero_after_seconds: StrictInt = Field(
        900, ge=60, le=86400, description="with `replicas.min: 0`: idle time before the last replica goes (KEDA's `cooldownPeriod`)"
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _an_autoscaler(cls, value: Any) -> Any:
        if value == "none":
            raise ValueError(
                "none is refused: the platform's policy gives every model an autoscaler; for a fixed count "
                "keep mode keda and set replicas.min = replicas.max"
            )
        return value


class Resources(Section):
    cpu: StrictStr = Field(description="CPU request and limit, a Kubernetes quantity such as `3` or `3500m`")
    memory: StrictStr = Field(description="memory request and limit, a Kubernetes quantity such as `12Gi`")

    @field_validator("cpu", "memory")
    @classmethod
    def _positive_quantity(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "cpu" and cpu_millis(value) < MIN_CPU_MILLIS:
            raise ValueError(f"{value!r} is below {MIN_CPU_MILLIS}m: vLLM's API server alone needs more to start")
        if info.field_name == "memory" and memory_mib(value) < MIN_MEMORY_MIB:
            raise ValueError(f"{value!r} is below {MIN_MEMORY_MIB}Mi: vLLM's API server alone needs more to start")
        return value


class Model(Section):
    name: StrictStr = Field(
        description=(
            "DNS-1035 label, unique; names the Deployment, Service, ServiceMonitor, ScaledObject and PDB (at most 55 "
            "characters with `replicas.min: 0`, whose pods' Service is `<name>-backend`)"
        )
    )
    model: StrictStr = Field(
        description=(
            "Hugging Face id (`org/name`) or `s3://bucket/prefix` (streamed with `--load-format runai_streamer`; a created "
            "cluster gives the model's ServiceAccount, through Pod Identity, a role that may read that prefix and nothing else)"
        )
    )
    revision: Optional[StrictStr] = Field(
        None,
        description=(
            "for a Hugging Face id: the repository's commit (40 hex digits) to serve, and the model cache's key "
            "(`s3://<bucket>/models/<org>/<name>/<revision>/`). Unset, the model is served from the hub's `main` as "
            "it is at each start, never cached: a preview warning says so, and how to look the commit up"
        ),
    )
    served_model_name: Optional[StrictStr] = Field(
        None,
        description=(
            "the name clients send and metrics carry as `model_name`; by default `model`; unique across models; letters, "
            "digits and `. _ : / -` only, since it reaches PromQL matchers and argv"
        ),
    )
    gpu_pool: Optional[StrictStr] = Field(None, description="required unless simulated: a `cluster.gpuNodePools` entry")
    tensor_parallel_size: StrictInt = Field(
        1, description="1, 2, 4 or 8, at most the pool's GPUs per node; also the pod's `nvidia.com/gpu`"
    )
    quantization: Optional[Quantization] = Field(
        None,
        description=(
            f"none (bf16), or {', '.join(f'`{q.value}`' for q in Quantization)}. On Ampere (A10G, A100) fp8 runs weight-only"
        ),
    )
    parameters_billions: Optional[StrictFloat] = Field(
        None, gt=0, le=MAX_PARAMETERS_BILLIONS, description="read from the id (`8B`, `70b`, `8x7B`) by default; needed for the fit checks when the id carries no size"
    )
    max_model_len: Optional[StrictInt] = Field(
        None,
        gt=0,
        le=2**31 - 1,
        description=(
            "set, the KV cache of one sequence this long must fit what the weights leave (see \"Fit checks\"); unset, "
            "vLLM gets `--max-model-len auto` and serves the longest context that fits, instead of refusing to start "
            "when the checkpoint's full context (128k for Llama 3.1) does not"
        ),
    )
    kv_cache_bytes_per_token: Optional[StrictInt] = Field(
        None,
        gt=0,
        le=2**40,
        description=(
            "the KV cache one token takes over all GPUs: 2 × layers × KV heads × head dim × 2 bytes, from the checkpoint's "
            "`config.json`; estimated from the size by default. Set it for architectures the estimate misses (multi-head "
            "attention such as Llama 2, Gemma 2's wide heads, mixtures of experts; with `--kv-cache-dtype fp8` in "
            "`extraArgs`, half the figure)"
        ),
    )
    gpu_memory_utilization: Optional[StrictFloat] = Field(None, gt=0, lt=1, description="in (0, 1); vLLM's 0.9 by default")
    replicas: Replicas = Field(
        Replicas(),
        description=(
            "`min ≤ max`; `max` replicas must fit the pool's `maxSize` nodes, and all the pool's models at their `min` "
            "together (at their `max` together, a warning); `min: 0` scales to zero with `autoscaling.mode: keda` and "
            "observability on"
        ),
    )
    autoscaling: Autoscaling = Field(Autoscaling(), description="how replicas follow load (see the `autoscaling` keys)")
    resources: Optional[Resources] = Field(
        None,
        description=(
            "`{cpu, memory}` requests and limits, derived from the instance type by default; must fit one node's "
            "allocatable. With `tensorParallelSize` above 1, `memory` must also hold the 8Gi memory-backed `/dev/shm` "
            "(it counts against the limit) plus 2Gi for each of vLLM's processes (API server, engine core, one worker "
            "per GPU): 16Gi for 2, 20Gi for 4, 28Gi for 8"
        ),
    )
    image: StrictStr = Field(
        DEFAULT_VLLM_IMAGE,
        description=(
            "the vLLM image, pinned: a release tag (a version, or a commit) or a digest; never a moving tag such as "
            "`latest` or `nightly`, never untagged"
        ),
    )
    extra_args: list[StrictStr] = Field(
        [],
        description=(
            "passed to `vllm serve`, read as the pinned release's own parser reads them; flags the platform sets itself "
            "(`--model`, `--port`, `--tensor-parallel-size`, ...) are refused in every spelling vLLM accepts (`-tp`, "
            "underscores, prefixes, `--flag=value`), and so are pipeline, data and prefill context parallelism above 1, "
            "which would need more GPUs than the pod gets; names and values that release refuses at start are refused "
            "here (see \"`extraArgs` and vLLM's own flags\")"
        ),
    )
    startup_timeout_seconds: Optional[StrictInt] = Field(
        None, ge=30, le=MAX_STARTUP_SECONDS, description="the startup probe's budget; from the model's size by default (see \"What each model gets\")"
    )
    shutdown_timeout_seconds: StrictInt = Field(
        60, ge=0, le=3600, description="`--shutdown-timeout`: how long vLLM drains in-flight requests on SIGTERM"
    )
    simulate: StrictBool = Field(False, description="this model only: llm-d's inference simulator instead of vLLM")

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: str) -> str:
        return check_label(value, DNS_1035_LABEL, "DNS-1035 label")

    @field_validator("model")
    @classmethod
    def _model_source(cls, value: str) -> str:
        if not (HF_MODEL_ID.fullmatch(value) or S3_URI.fullmatch(value)):
            raise ValueError(f"{value!r} is neither a Hugging Face id (org/name) nor an s3://bucket/prefix URI")
        return value

    @field_validator("revision")
    @classmethod
    def _commit(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        if value is None:
            return value
        check_pattern(value, HF_REVISION, "a commit of the repository (40 hex digits); a branch or tag such as main moves")
        if str(info.data.get("model", "")).startswith("s3://"):
            raise ValueError("is for a Hugging Face id; an s3:// model is served from its prefix as it is")
        return value

    @field_validator("served_model_name")
    @classmethod
    def _plain_served_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not SERVED_MODEL_NAME.fullmatch(value):
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
        problem = images.pin_problem(value)
        if problem:
            raise ValueError(f"{value!r} {problem}; pin a release such as {DEFAULT_VLLM_IMAGE}")
        return value

    @field_validator("extra_args")
    @classmethod
    def _flags_that_work(cls, values: list[str], info: ValidationInfo) -> list[str]:
        # `image` is declared before `extraArgs`, so it is validated first: the release it runs decides whether
        # vLLM's own parser reads the entries here (a test holds the order).
        if len(values) > MAX_EXTRA_ARGS:
            raise ValueError(f"{len(values)} entries; at most {MAX_EXTRA_ARGS}")
        for index, value in enumerate(values):
            if len(value) > MAX_EXTRA_ARG_LENGTH:
                raise ValueError(f"entry {index} ({value[:40]!r}...) is {len(value)} characters; at most {MAX_EXTRA_ARG_LENGTH}")
        problems = vllm_flags.extra_args_problems(values, pinned=vllm_parser.checks_image(str(info.data.get("image"))))
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
        return self.autoscaling.mode is AutoscalingMode.KEDA and self.replicas.min == 0
