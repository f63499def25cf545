"""What a valid config still deserves a word about at preview: checks that did not run, and what runs differently."""

from __future__ import annotations

from vllm_platform.catalog import ELASTIC_IPS, GPU_VCPU_QUOTAS, INSTANCE_TYPES, Quota, quota_family, smallest
from vllm_platform.config.cluster import NatGateways
from vllm_platform.config.pools import CapacityKind, GpuNodePool
from vllm_platform.config.platform import PlatformConfig
from vllm_platform.config.secrets import set_command
from vllm_platform.contract import MONITORING_NAMESPACE
from vllm_platform.pins import ALERTMANAGER_SERVICE_ACCOUNT
from vllm_platform.plan import fit
from vllm_platform.plan.plans import ModelPlan, Plan


def _surge_note(model: ModelPlan, beside: list[str]) -> str:
    assert model.pool is not None
    others = ", ".join(beside) if len(beside) <= 3 else f"{len(beside)} other models"
    return (
        f"models[{model.name}]: pool {model.pool.name} (maxSize {model.pool.max_size}) has no node left for an extra "
        f"replica at replicas.max {model.replicas.max}"
        + (f" beside {others} at theirs" if beside else "")
        + ", so a rollout replaces one replica at a time"
        + (", and the model is down while its only replica restarts" if model.replicas.max == 1 else "")
        + "; raise the pool's maxSize for surge rollouts"
    )


def config_notes(
    cfg: PlatformConfig,
    models: tuple[ModelPlan, ...],
    pools: list[GpuNodePool],
    sized_on: dict[str, list[fit.ModelSizing]],
) -> list[str]:
    notes = []
    for model in models:
        if model.simulated:
            notes.append(
                f"models[{model.name}]: simulated with llm-d-inference-sim, no GPU; GPU, node and disk fit checks skipped"
            )
            continue
        assert model.pool is not None
        if model.weights_bucket and cfg.cluster.existing is not None:
            notes.append(
                f"models[{model.name}]: {model.source} is read with the pod's own AWS identity; an existing-cluster "
                f"stack creates no IAM, so give ServiceAccount {model.namespace}/{model.name} read access to it there"
            )
        gpu = model.pool.instance.gpu
        if model.quantization == "fp8" and not gpu.native_fp8:
            notes.append(
                f"models[{model.name}]: fp8 on {gpu.model} ({gpu.architecture.capitalize()}) runs weight-only "
                f"(FP8 Marlin): weights take 1 byte per parameter, activations and compute stay 16-bit"
            )
        if not model.surge_room:
            beside = [s.model.name for s in sized_on.get(model.pool.name, []) if s.model.name != model.name]
            notes.append(_surge_note(model, beside))
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
        f"({quota.code}, default {quota.default if quota.default is not None else 'not published, often 0 on a new account'})"
        for quota, amount in needs
    ]
    info = [
        "EC2 quotas this stack draws on in its Region, at every pool's maxSize: " + "; ".join(described) + ". Check one "
        "with `aws service-quotas get-service-quota --service-code ec2 --quota-code CODE`, raise it with "
        "`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code CODE --desired-value N` "
        "(vCPUs, not instances); until then EC2 refuses the nodes (VcpuLimitExceeded): Karpenter tries the pool's next "
        "capacity type, retries every 3 minutes, and the pool's models stay Pending"
    ]
    warnings = [
        f"cluster.vpc: {amount} NAT gateways need {amount} Elastic IPs, above the default quota of {quota.default} per "
        f"Region ({quota.code}), which every VPC of the account there shares; raise it first, or use natGateways single"
        for quota, amount in needs
        if quota.default is not None and amount > quota.default
    ]
    return info, warnings


def token_notes(cfg: PlatformConfig) -> list[str]:
    """A gated checkpoint (meta-llama/*, google/gemma-*, ...) without a token fails only after the startup budget."""
    hub = [m.model for m in cfg.models if m.weights_bucket is None and not cfg.is_simulated(m)]
    if cfg.hf_token is not None or not hub:
        return []
    return [
        f"hfToken: not set, so {', '.join(sorted(set(hub)))} download anonymously; a gated repository "
        f"(meta-llama/* among them) refuses that. Set it: {set_command('hfToken')}"
    ]
