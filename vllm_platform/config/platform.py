"""The whole stack config, and the rules that hold between its sections."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Optional

from pydantic import Field, StrictBool, StrictFloat, StrictStr, ValidationError, field_validator

from vllm_platform.config.base import (
    DNS_1123_LABEL,
    PRINTABLE_WORD,
    Section,
    check_label,
    check_pattern,
    duplicates,
    namespace_names,
)
from vllm_platform.config.cluster import Cluster
from vllm_platform.config.delivery import Images, ModelCache
from vllm_platform.config.errors import ConfigError, pydantic_problems
from vllm_platform.config.gateway import Exposure, Gateway
from vllm_platform.config.models import AutoscalingMode, Model
from vllm_platform.config.observability import Observability
from vllm_platform.config.secrets import SECRET_PLACEHOLDER, is_secret_location, plaintext_problems, set_command
from vllm_platform.contract import BACKEND_SERVICE_SUFFIX, LABEL_MAX_LENGTH, RESERVED_NAMESPACES, SERVING_PORT


class Verify(Section):
    """Defaults for `venv/bin/python -m tools.verify` against this stack; its flags override them."""

    p95_slo_seconds: StrictFloat = Field(3.0, gt=0, description="p95 latency limit for `make verify`; `--p95-slo` overrides it")


class PlatformConfig(Section):
    namespace: StrictStr = Field(
        "inference",
        description=(
            "namespace of the model deployments (DNS-1123 label, not `monitoring`, `keda`, the gateway's three (`envoy-gateway-system`, `envoy-ai-gateway-system`, `llm-gateway`) or `kube-*`, which the "
            "platform and Kubernetes use, nor `default`); Pod Security `restricted` is enforced there"
        ),
    )
    cluster: Cluster = Field(description="the EKS cluster and its GPU node pools, or an existing cluster (see below)")
    models: list[Model] = Field(min_length=1, description="one entry per served model (see below)")
    observability: Observability = Field(
        Observability(), description="kube-prometheus-stack, KEDA, DCGM exporter, dashboard and alerts (see below)"
    )
    verify: Verify = Field(Verify(), description="defaults for `make verify` (see below)")
    model_cache: ModelCache = Field(
        ModelCache(), description="the S3 bucket checkpoints are staged into once per revision and streamed from (see below)"
    )
    images: Images = Field(Images(), description="where the GPU nodes pull the vLLM image from (see below)")
    gateway: Gateway = Field(Gateway(), description="one OpenAI endpoint for every model, with keys and token limits (see below)")
    hf_token: Optional[StrictStr] = Field(
        None,
        repr=False,
        description=(
            f"a secret, `{set_command('hfToken')}`: the Hugging Face token for gated checkpoints "
            "(meta-llama/*), mounted as a file from the `hf-token` Secret, never an env value"
        ),
    )
    simulate_accelerators: StrictBool = Field(
        False,
        description="serve every model with llm-d's inference simulator instead of vLLM: no GPUs needed (see \"A local stack\")",
    )
    # Namespaces whose pods may call the models; everything else is denied at the serving port.
    client_namespaces: list[StrictStr] = Field(
        [],
        description=(
            f"namespaces whose pods may call the models on port {SERVING_PORT}, directly or through the interceptor; ingress is "
            "otherwise denied (the scraping Prometheus is always admitted: `monitoring`, or "
            "`observability.scrapeNamespaces`)"
        ),
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_is_label(cls, value: str) -> str:
        if value == "default":
            raise ValueError(
                "'default' is every unnamespaced object's namespace, where anything applied without -n lands next to "
                "the models; choose a namespace of the models' own, such as inference"
            )
        if value in RESERVED_NAMESPACES or value.startswith("kube-"):
            raise ValueError(
                f"{value!r} is where the platform runs its own components or Kubernetes its system; "
                "choose a namespace of the models' own, such as inference"
            )
        return check_label(value, DNS_1123_LABEL, "DNS-1123 label")

    @field_validator("hf_token")
    @classmethod
    def _token_is_one_word(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        # `echo hf_... | pulumi config set --secret` stores the newline, and the hub refuses the token.
        return check_pattern(value, PRINTABLE_WORD, "a token of printable ASCII without spaces or a newline", shown=False)

    @field_validator("client_namespaces")
    @classmethod
    def _namespaces_are_labels(cls, values: list[str]) -> list[str]:
        return namespace_names(values)

    @property
    def any_on_gpus(self) -> bool:
        """Some model runs vLLM on GPUs and loads weights; none does where every model is simulated."""
        return any(not self.is_simulated(model) for model in self.models)

    @property
    def runs_gpu_metrics(self) -> bool:
        """The DCGM exporter and GPU alerts: only where some model is on GPUs, unless the config says."""
        configured = self.observability.gpu_metrics
        return self.observability.enabled and (self.any_on_gpus if configured is None else configured)

    @property
    def caches_models(self) -> bool:
        """Whether models with a revision stream from the S3 model cache; never where every model is simulated,
        which loads no weights: such a stack makes no bucket."""
        return self.any_on_gpus and self.model_cache.active(self.cluster.existing is None)

    def is_simulated(self, model: Model) -> bool:
        return self.simulate_accelerators or model.simulate


def _model_problems(cfg: PlatformConfig, model: Model) -> list[str]:
    where = f"models[{model.name}]"
    problems = []
    if model.autoscaling.mode is AutoscalingMode.HPA_CPU and model.replicas.min == 0:
        problems.append(f"{where}.replicas.min: an HPA cannot scale to 0; set min 1 or use autoscaling.mode keda")
    if model.scales_to_zero and len(model.name + BACKEND_SERVICE_SUFFIX) > LABEL_MAX_LENGTH:
        problems.append(
            f"{where}.name: with replicas.min 0 its pods' Service is {model.name}{BACKEND_SERVICE_SUFFIX}, "
            f"longer than 63 characters; shorten the name to {LABEL_MAX_LENGTH - len(BACKEND_SERVICE_SUFFIX)} or fewer"
        )
    if model.scales_to_zero and not cfg.observability.enabled:
        problems.append(
            f"{where}.replicas.min: 0 needs the KEDA HTTP add-on to hold requests and wake the model, and "
            f"observability.enabled false leaves it uninstalled; set min 1 or enable observability"
        )
    keda = model.autoscaling.mode is AutoscalingMode.KEDA
    if keda and not cfg.observability.enabled and not cfg.observability.external_prometheus_url:
        problems.append(
            f"{where}.autoscaling: KEDA needs a Prometheus to query, but observability.enabled is false; "
            f"set observability.externalPrometheusUrl or enable observability"
        )
    if cfg.is_simulated(model):
        return problems
    if model.gpu_pool is None:
        return [*problems, f"{where}.gpuPool: is required for a model on GPUs (pools: {', '.join(cfg.cluster.pools) or 'none'})"]
    if model.gpu_pool not in cfg.cluster.pools:
        known = ", ".join(cfg.cluster.pools) or "none are configured"
        return [*problems, f"{where}.gpuPool: {model.gpu_pool!r} is not a pool in cluster.gpuNodePools ({known})"]
    return problems


def cross_field_problems(cfg: PlatformConfig) -> list[str]:
    """What each section allows on its own but the whole does not: names used twice, models without a pool."""
    problems = []
    for name in duplicates([p.name for p in cfg.cluster.gpu_node_pools]):
        problems.append(f"cluster.gpuNodePools: name {name!r} is used more than once")
    for name in duplicates([m.name for m in cfg.models]):
        problems.append(f"models: name {name!r} is used more than once")
    for served in duplicates([m.effective_served_name for m in cfg.models]):
        problems.append(f"models: servedModelName {served!r} is served twice; metrics and routing need it unique")
    for model in cfg.models:
        problems += _model_problems(cfg, model)
    used = {m.gpu_pool for m in cfg.models if not cfg.is_simulated(m)}
    for pool in cfg.cluster.gpu_node_pools:
        if pool.warm_nodes and pool.name not in used:
            problems.append(
                f"cluster.gpuNodePools[{pool.name}].warmNodes: {pool.warm_nodes}, but no model runs on the pool, so its "
                "warm nodes would hold no image and wait for nothing; set it to 0"
            )
    if cfg.images.docker_hub is not None and cfg.cluster.existing is not None:
        problems.append(
            "images.dockerHub: an existing cluster gets no ECR pull-through cache, since the stack creates no AWS "
            "resources there; give the mirror your nodes pull from as images.registry"
        )
    if cfg.model_cache.enabled and cfg.cluster.existing is not None and cfg.model_cache.bucket is None:
        problems.append(
            "modelCache.enabled: an existing cluster gets no bucket of the stack's own; name yours in modelCache.bucket"
        )
    return [*problems, *_gateway_problems(cfg)]


def _gateway_problems(cfg: PlatformConfig) -> list[str]:
    gateway = cfg.gateway
    if not gateway.enabled:
        return []
    problems = []
    if not gateway.clients:
        problems.append("gateway.clients: the gateway admits only clients with a key, and none is configured; add one")
    names = {m.name for m in cfg.models}
    for client in gateway.clients:
        unknown = [m for m in client.models if m not in names]
        if unknown:
            problems.append(
                # Quoted: the message stays one line, and a stray newline or space in the name shows.
                f"gateway.clients[{client.name}].models: {', '.join(map(repr, unknown))} is not in models "
                f"({', '.join(sorted(names))})"
            )
    keys = [c.api_key for c in gateway.clients if c.api_key != SECRET_PLACEHOLDER]
    if len(set(keys)) < len(keys):
        problems.append("gateway.clients: two clients share an apiKey; the gateway could not tell them apart")
    if gateway.exposure is not Exposure.CLUSTER and cfg.cluster.existing is not None:
        problems.append(
            f"gateway.exposure: {gateway.exposure.value} needs the AWS Load Balancer Controller, which this stack installs "
            "only on a cluster it creates; use exposure cluster on an existing cluster"
        )
    return problems


def parse_config(raw: dict[str, Any], secret_paths: Collection[str] = ()) -> PlatformConfig:
    """Validate the raw `vllm-platform:` values (keys without the namespace) or raise ConfigError.

    `secret_paths` are the keys stored encrypted (`observability`, or `observability.grafanaAdminPassword`);
    a secret outside them is refused. The fit of each model on its pool is the plan's to check
    (`vllm_platform.plan.resolve`)."""
    leaked = plaintext_problems(raw, secret_paths)
    try:
        cfg = PlatformConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError([*leaked, *pydantic_problems(error, raw, is_secret_location)]) from None
    problems = [*leaked, *cross_field_problems(cfg)]
    if problems:
        raise ConfigError(problems)
    return cfg
