"""What a valid config still deserves a word about at preview: checks that did not run, and what runs differently."""

from __future__ import annotations

from typing import Optional

from vllm_platform.catalog import (
    ELASTIC_IPS,
    GPU_VCPU_QUOTAS,
    INSTANCE_TYPES,
    STANDARD_FAMILIES,
    STANDARD_VCPU_QUOTA,
    Quota,
    quota_family,
    size_vcpus,
    smallest,
)
from vllm_platform.config.cluster import NatGateways
from vllm_platform.config.models import Quantization
from vllm_platform.config.pools import CapacityKind, GpuNodePool
from vllm_platform.config.platform import PlatformConfig
from vllm_platform.config.secrets import set_command
from vllm_platform.contract import MONITORING_NAMESPACE, images, vllm_parser
from vllm_platform.pins import ALERTMANAGER_SERVICE_ACCOUNT
from vllm_platform.plan import coldstart, fit
from vllm_platform.plan.delivery import ImageRoute, WeightsSource
from vllm_platform.plan.plans import ModelPlan, Plan


def _surge_note(model: ModelPlan, on_pool: list[fit.ModelSizing]) -> str:
    assert model.pool is not None
    # Named where they are few; counted, without a pass over them, where a pool holds many.
    beside = [s.model.name for s in on_pool if s.model.name != model.name] if len(on_pool) <= 4 else []
    others = ", ".join(beside) if beside else f"{len(on_pool) - 1} other models"
    return (
        f"models[{model.name}]: pool {model.pool.name} (maxSize {model.pool.max_size}) has no node left for an extra "
        f"replica at replicas.max {model.replicas.max}"
        + (f" beside {others} at theirs" if len(on_pool) > 1 else "")
        + ", so a rollout replaces one replica at a time"
        + (", and the model is down while its only replica restarts (VllmModelDown pages for it)" if model.replicas.max == 1 else "")
        + "; raise the pool's maxSize for surge rollouts"
    )


def config_notes(
    cfg: PlatformConfig,
    models: tuple[ModelPlan, ...],
    pools: list[GpuNodePool],
    sized_on: dict[str, list[fit.ModelSizing]],
) -> list[str]:
    notes = []
    extra_args = {m.name: m.extra_args for m in cfg.models}
    for model in models:
        if model.simulated:
            notes.append(
                f"models[{model.name}]: simulated with llm-d-inference-sim, no GPU and no weights; the GPU and node fit "
                "checks, the model cache and its staging are skipped"
            )
            continue
        assert model.pool is not None
        if extra_args[model.name] and not vllm_parser.checks_image(model.image):
            notes.append(
                f"models[{model.name}]: extraArgs are checked against vLLM {vllm_parser.table_release()}'s own flags, and "
                f"{model.image} is not that release: names and values it refuses would show only as a crash loop"
            )
        if model.weights.source is WeightsSource.S3 and cfg.cluster.existing is not None:
            notes.append(
                f"models[{model.name}]: {model.source} is read with the pod's own AWS identity; an existing-cluster "
                f"stack creates no IAM, so give ServiceAccount {model.namespace}/{model.name} read access to it there"
            )
        gpu = model.pool.instance.gpu
        if model.quantization is Quantization.FP8 and not gpu.native_fp8:
            notes.append(
                f"models[{model.name}]: fp8 on {gpu.model} ({gpu.architecture.capitalize()}) runs weight-only "
                f"(FP8 Marlin): weights take 1 byte per parameter, activations and compute stay 16-bit"
            )
        if not model.surge_room:
            notes.append(_surge_note(model, sized_on.get(model.pool.name, [])))
    for pool, nodes, described in fit.overcommitted_pools(pools, sized_on, "max"):
        notes.append(
            f"cluster.gpuNodePools[{pool.name}]: its models at replicas.max need {nodes} {smallest(pool.instance_types).name} "
            f"nodes ({described}) but maxSize is {pool.max_size}; they cannot all be at replicas.max at once, "
            f"and a model may stay below it while the others hold the nodes; raise maxSize to {nodes} if they must"
        )
    return notes


def alerting_notes(cfg: PlatformConfig) -> list[str]:
    """Alerts that reach no one are worse than none: they look like monitoring."""
    obs = cfg.observability
    if not obs.enabled:
        return []
    if not obs.alertmanager_enabled:
        return ["observability.alertmanagerEnabled: false, so alerts go nowhere: Prometheus evaluates them for no one"]
    if obs.alertmanager is None:
        return [
            "observability.alertmanager: not set, so alerts go nowhere: Alertmanager sends every alert, critical ones "
            "included, to its null receiver; set receivers, and name the one that pages in critical"
        ]
    notes = []
    if not obs.alertmanager.warning:
        notes.append(
            "observability.alertmanager.warning: empty, so warnings go nowhere: partial outages, crash loops, latency, "
            "Xid errors and KEDA's scaler errors reach no one; name a chat receiver, or the pager"
        )
    if obs.alertmanager.watchdog is None:
        notes.append(
            "observability.alertmanager.watchdog: not set, so nothing notices when alerting itself stops: name a "
            "heartbeat receiver that pages when the always-firing Watchdog stops arriving"
        )
    if cfg.cluster.existing is not None and any(r.sns for r in obs.alertmanager.receivers):
        notes.append(
            "observability.alertmanager: an SNS receiver publishes with Alertmanager's own AWS identity; an "
            f"existing-cluster stack creates no IAM, so give ServiceAccount {MONITORING_NAMESPACE}/{ALERTMANAGER_SERVICE_ACCOUNT} "
            "sns:Publish on its topics there"
        )
    return notes


def quota_needs(plan: Plan) -> list[tuple[Quota, int]]:
    """The EC2 quotas a created cluster draws on, and how much of each at every pool's maxSize."""
    cluster = plan.config.cluster
    if cluster.existing is not None:
        return []
    vpc = cluster.vpc
    needs: list[tuple[Quota, int]] = []
    if vpc.id is None:
        needs.append((ELASTIC_IPS, vpc.zone_count if vpc.nat_gateways is NatGateways.PER_AZ else 1))
    vcpus: dict[Quota, int] = {}
    system = cluster.system_nodes
    per_node = size_vcpus(system.instance_type)
    if per_node is not None and quota_family(system.instance_type) in STANDARD_FAMILIES:
        vcpus[STANDARD_VCPU_QUOTA] = per_node * system.max_size
    for pool in plan.pools:
        # Instances in a capacity reservation count against the on-demand quota; a pool that may use spot
        # needs the spot quota as well, at its maxSize, since it can run on either.
        purchases = sorted({"SPOT" if kind == CapacityKind.SPOT else "ON_DEMAND" for kind in pool.capacity_types})
        for family in sorted({quota_family(t) for t in pool.instance_types}):
            widest = max(INSTANCE_TYPES[t].vcpu for t in pool.instance_types if quota_family(t) == family)
            for purchase in purchases:
                quota = GPU_VCPU_QUOTAS[(family, purchase)]
                vcpus[quota] = vcpus.get(quota, 0) + widest * pool.max_size
    return needs + sorted(vcpus.items(), key=lambda item: item[0].code)


def quota_notes(plan: Plan) -> tuple[list[str], list[str]]:
    """(what the preview prints as information, what it warns about): each quota the stack needs against
    its default, with the commands that check and raise it."""
    needs = quota_needs(plan)
    if not needs:
        return [], []
    described = [
        f"{amount} {('Elastic IP' + 's' * (amount != 1) + ' (NAT gateways)') if quota is ELASTIC_IPS else 'vCPUs of ' + quota.name} "
        f"({quota.code}, default {quota.default if quota.default is not None else 'not published: a new account may start low, its GPU quotas at 0'})"
        for quota, amount in needs
    ]
    info = [
        "EC2 quotas this stack draws on in its Region, at every pool's maxSize: " + "; ".join(described) + ". Check one "
        "with `aws service-quotas get-service-quota --service-code ec2 --quota-code CODE`, raise it with "
        "`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code CODE --desired-value N` "
        "(vCPUs, not instances); until then EC2 refuses the nodes (VcpuLimitExceeded): Karpenter tries the pool's next "
        "capacity type, retries every 3 minutes, and the pool's models stay Pending"
    ]
    if any(CapacityKind.SPOT in pool.capacity_types for pool in plan.pools):
        # EC2 makes the role at an account's first Spot request only if the caller may; Karpenter's role may not.
        info.append(
            "spot capacity needs the account's Spot service-linked role (AWSServiceRoleForEC2Spot); where the account "
            "has never used Spot, create it once: `aws iam create-service-linked-role --aws-service-name spot.amazonaws.com` "
            "(an answer that it exists already is fine); without it every spot launch fails with "
            "AuthFailure.ServiceLinkedRoleCreationNotPermitted"
        )
    warnings = [
        f"cluster.vpc: {amount} NAT gateways need {amount} Elastic IPs, above the default quota of {quota.default} per "
        f"Region ({quota.code}), which every VPC of the account there shares; raise it first, or use natGateways single"
        for quota, amount in needs
        if quota.default is not None and amount > quota.default
    ]
    return info, warnings


def token_notes(cfg: PlatformConfig) -> list[str]:
    """A gated checkpoint (meta-llama/*, google/gemma-*, ...) without a token fails only after the startup budget."""
    hub = [m.model for m in cfg.models if not m.model.startswith("s3://") and not cfg.is_simulated(m)]
    if cfg.hf_token is not None or not hub:
        return []
    return [
        f"hfToken: not set, so {', '.join(sorted(set(hub)))} download anonymously; a gated repository "
        f"(meta-llama/* among them) refuses that. Set it: {set_command('hfToken')}"
    ]


HUB_COMMIT_LOOKUP = "curl -s https://huggingface.co/api/models/{repo}/revision/main | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"sha\"])'"


def cold_start_notes(plan: Plan) -> list[str]:
    """One line per model at preview: how long a new replica takes, from a running node and from zero."""
    lines = []
    for model in plan.models:
        cold = model.cold_start
        if cold is None:
            continue
        assert model.pool is not None
        warm = f", on one of the pool's {model.pool.warm_nodes} warm node(s)" if cold.warm else ""
        lines.append(
            f"models[{model.name}]: cold start ~{cold.from_node_seconds} s from a running node that holds the image "
            f"(~{cold.from_node_seconds + cold.image_pull_seconds} s on one that does not), ~{cold.from_zero_seconds} s "
            f"from zero{warm} (on {model.pool.instance.name}: node boot {cold.node_boot_seconds} s, image pull "
            f"{cold.image_pull_seconds} s, weights {cold.weights_seconds} s from {model.weights.source.value}, engine start "
            f"{cold.engine_start_seconds} s); startup budget {model.startup_budget_seconds} s"
        )
    return lines


def delivery_notes(plan: Plan) -> list[str]:
    """Where weights and images come from slower, or less reproducibly, than they could: each with its way out."""
    cfg, notes = plan.config, []
    for model in plan.models:
        if model.simulated or model.source.startswith("s3://"):
            continue
        if model.revision is None:
            notes.append(
                f"models[{model.name}].revision: not set, so {model.source} is served from the hub's main as it is at "
                "each start: a new commit there changes what serves without a deploy, and the model is never cached. "
                f"Pin the commit: {HUB_COMMIT_LOOKUP.format(repo=model.source)}"
            )
        if not cfg.caches_models and model.cold_start is not None:
            notes.append(
                f"models[{model.name}]: no model cache on this cluster, so every start downloads the checkpoint from the "
                f"hub: {model.cold_start.weights_seconds} s of its {model.cold_start.from_node_seconds} s from a running "
                "node; name a bucket in modelCache.bucket to stream it from S3"
            )
        staging = model.weights.staging
        if staging is not None and cfg.cluster.existing is not None:
            notes.append(
                f"models[{model.name}]: an existing-cluster stack creates no IAM: give ServiceAccount "
                f"{model.namespace}/{staging.service_account} write access to s3://{cfg.model_cache.bucket}/{staging.prefix} "
                f"and {model.namespace}/{model.name} read access, there"
            )
    upstream_hub = [
        m.name for m in plan.models if not m.simulated and m.image_plan.route is ImageRoute.UPSTREAM and images.docker_hub_path(m.image)
    ]
    if upstream_hub and cfg.cluster.existing is None:
        notes.append(
            f"images: {', '.join(upstream_hub)} pull the vLLM image straight from Docker Hub, which allows 100 anonymous "
            "pulls per 6 hours per IP address, and every node shares its NAT gateway's; set images.dockerHub for an ECR "
            "pull-through cache in the cluster's region, or images.registry for a mirror of yours"
        )
    for model in plan.models:
        registry = _uncached_registry(model.image) if not model.simulated and cfg.cluster.existing is None else None
        if registry is not None:
            notes.append(
                f"models[{model.name}].image: {model.image} comes from {registry}, which neither the stack's pull-through "
                f"cache (Docker Hub's) nor images.registry covers: every node pulls its "
                f"~{coldstart.c('VLLM_IMAGE_BYTES') / 1e9:.0f} GB from there, through the NAT gateway; copy it to ECR in "
                "the cluster's region (or add an ECR pull-through rule for that registry), or use the Docker Hub release"
            )
    return notes


def _uncached_registry(reference: str) -> Optional[str]:
    """The registry of an image from a public registry outside AWS that the stack can neither cache nor mirror
    (its cache and images.registry are Docker Hub's), or None."""
    domain = images.parse(reference).domain  # type: ignore[union-attr]  # validated at config time
    return domain if domain in images.REMOTE_PUBLIC_REGISTRIES else None
