"""The plan: the validated stack config resolved once into frozen facts per pool and per model.

`resolve` checks every model against its pool (see `fit`) and, if all fit, computes what every builder
reads: resources, GPUs, nodes at replicas.max and surge room, the startup budget and rollout timeouts,
the command line. Builders take a `ModelPlan` (and the `Plan` for what spans models); none goes back
to the config to recompute a number.
"""

from __future__ import annotations

import math
from typing import Optional

from vllm_platform.catalog import EFA_INTERFACES, smallest
from vllm_platform.config.pools import GpuNodePool
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.models import Model
from vllm_platform.config.platform import PlatformConfig
from vllm_platform.contract import needs_shared_memory
from vllm_platform.plan import coldstart, delivery, fit, notes, serving, sizing, system
from vllm_platform.plan.gateway import gateway_plan
from vllm_platform.plan.coldstart import ColdStart
from vllm_platform.plan.delivery import WeightsPlan
from vllm_platform.plan.plans import ModelPlan, Plan, PoolPlan

# A NodePool's terminationGracePeriod is a multiple of this. Karpenter hashes the NodePool's template into its
# nodes, so a changed grace period marks every node of the pool drifted and replaces them one by one, each with
# its replicas' cold starts. Rounding the pool's longest rollout wave up to half an hour keeps ordinary model
# edits (a flag, a longer drain, another model) from doing that; the grace is a ceiling Karpenter waits up to,
# so a larger one only lets a drain that is still progressing finish.
NODE_DRAIN_STEP_SECONDS = 1800
# What a rollout allows a simulated model's pod besides its load: the simulator's small image on a system node.
SIMULATED_NODE_SECONDS = 120
# What a simulated model's pod requests: the simulator is a small Go server.
SIMULATOR_RESOURCES = sizing.PodResources(cpu_millis=250, memory_mib=256)


def _parameters(model: Model, sized: Optional[fit.ModelSizing]) -> Optional[float]:
    return sized.parameters_billions if sized else fit.parameters_billions(model)


def _checkpoint_bytes(model: Model, params: Optional[float]) -> float:
    return sizing.weights_gb(params or 0, model.quantization) * 1e9


def _weights(cfg: PlatformConfig, model: Model, params: Optional[float]) -> WeightsPlan:
    return delivery.weights_plan(cfg, model, delivery.staging_plan(cfg, model, _checkpoint_bytes(model, params)))


def _cold_start(cfg: PlatformConfig, model: Model, sized: Optional[fit.ModelSizing], weights: WeightsPlan) -> Optional[ColdStart]:
    """The estimate of a new replica's start on its pool; None for a simulated model, which loads nothing."""
    if sized is None or cfg.is_simulated(model):
        return None
    params, warm = sized.parameters_billions, sized.pool.warm_nodes > 0
    # Only the created cluster's EC2NodeClasses turn on FastImagePull; an existing cluster's node groups are its owner's.
    fast_pull = cfg.cluster.existing is None
    checkpoint = _checkpoint_bytes(model, params)
    return coldstart.estimate(sized.instance, checkpoint, params, model.tensor_parallel_size, weights.source, warm, fast_pull)


def _timings(model: Model, params: Optional[float], cold: Optional[ColdStart]) -> tuple[int, int, int, int]:
    """(termination grace, startup budget, cold start, rollout wave) of one model, in seconds."""
    budget = serving.startup_budget_seconds(model, params, cold)
    # What a rollout allows a new pod: the whole cold start with its margin, never less than the probe allows.
    cold_start = max(coldstart.with_safety(cold.cold_seconds), budget) if cold else budget + SIMULATED_NODE_SECONDS
    grace = serving.termination_grace_seconds(model)
    return grace, budget, cold_start, grace + cold_start


def pool_plan(
    pool: GpuNodePool, sized: list[fit.ModelSizing], cold_starts: dict[str, Optional[ColdStart]], existing: bool = False
) -> PoolPlan:
    """`cold_starts`: each of the pool's models' estimate, by name; `existing`: the pool is a node group of an
    existing cluster, not a Karpenter NodePool."""
    # A node's drain may wait for a replacement replica to come up (the PDB lets one go at a time), then for
    # the pod's own grace: one rollout wave of the slowest model on the pool.
    waves = (_timings(s.model, s.parameters_billions, cold_starts[s.model.name])[3] for s in sized)
    return PoolPlan(
        name=pool.name,
        instance_types=tuple(pool.instance_types),
        instance=smallest(pool.instance_types),
        max_size=pool.max_size,
        capacity_types=tuple(pool.capacity_types),
        capacity_reservations=tuple(r.selector_term() for r in pool.capacity_reservations),
        consolidate_after=pool.consolidate_after,
        expire_after=pool.expire_after,
        drain_seconds=math.ceil(max(waves, default=1) / NODE_DRAIN_STEP_SECONDS) * NODE_DRAIN_STEP_SECONDS,
        min_size=pool.min_size,
        root_volume_gib=pool.root_volume(existing),
        warm_nodes=pool.warm_nodes,
        efa_interfaces=min(EFA_INTERFACES.get(t, 0) for t in pool.instance_types) if pool.efa else 0,
        placement_group=pool.placement_group,
        # The same count the fit checks and the notes give, so a plan never disagrees with a message.
        nodes_at_max=fit.pool_demand(pool, sized, "max")[0],
        nodes_at_min=fit.pool_demand(pool, sized, "min")[0],
    )


def _surge_room(sized: fit.ModelSizing, pool: PoolPlan, at_max: int) -> bool:
    """Whether a rollout can add a new replica before removing an old one, with every model of the pool at
    replicas.max (this one's on `at_max` nodes)."""
    others = pool.nodes_at_max - at_max
    return others + sized.nodes_for(sized.model.replicas.max + 1) <= pool.max_size


def _model_plan(
    cfg: PlatformConfig,
    model: Model,
    sized: Optional[fit.ModelSizing],
    pool: Optional[PoolPlan],
    weights: WeightsPlan,
    cold: Optional[ColdStart],
) -> ModelPlan:
    simulated = cfg.is_simulated(model)
    params = _parameters(model, sized)
    nodes_at_max = 0 if sized is None else sized.nodes_for(model.replicas.max)
    surge_room = True if sized is None or pool is None else _surge_room(sized, pool, nodes_at_max)
    step = serving.rolling_update(surge_room)
    grace, budget, cold_start, wave = _timings(model, params, cold)
    # A simulated model on no GPU: what the config asks for, else what the simulator needs.
    pod = sized.pod if sized else (fit.configured_resources(model) or SIMULATOR_RESOURCES)
    streamer = None
    if weights.streams and sized is not None:
        readers = coldstart.streamer_readers(sized.instance, model.tensor_parallel_size)
        streamer = serving.streamer_config(pod.memory_mib, model.tensor_parallel_size, readers)
    disk = sizing.pod_disk_gib(weights.streams, params or 0, model.quantization)
    return ModelPlan(
        name=model.name,
        namespace=cfg.namespace,
        served_name=model.effective_served_name,
        source=model.model,
        revision=model.revision,
        weights=weights,
        image=model.image,
        image_plan=delivery.image_plan(cfg, model.image),
        simulated=simulated,
        pool=pool,
        tensor_parallel_size=model.tensor_parallel_size,
        gpus=0 if simulated else model.tensor_parallel_size,
        parameters_billions=params,
        quantization=model.quantization,
        resources=pod,
        ephemeral_storage_gib=None if simulated else disk,
        shared_memory=not simulated and needs_shared_memory(model.tensor_parallel_size),
        replicas=model.replicas,
        autoscaling=model.autoscaling,
        scales_to_zero=model.scales_to_zero,
        nodes_at_max=nodes_at_max,
        surge_room=surge_room,
        rolling_update=step,
        shutdown_timeout_seconds=model.shutdown_timeout_seconds,
        prestop_seconds=serving.PRESTOP_SLEEP_SECONDS,
        termination_grace_seconds=grace,
        startup_budget_seconds=budget,
        cold_start=cold,
        cold_start_seconds=cold_start,
        rollout_wave_seconds=wave,
        rollout_timeout_seconds=serving.rollout_timeout_seconds(model.replicas.max, step, wave),
        args=serving.simulator_args(model, params) if simulated else serving.vllm_args(model, streamer, not weights.streams),
        simulated_load_seconds=sizing.simulated_timing(params, model.tensor_parallel_size).load_seconds,
        guarded_from_cluster_autoscaler=cfg.cluster.existing is not None,
    )


def resolve(cfg: PlatformConfig) -> Plan:
    """The plan of a config `parse_config` accepted; raises ConfigError, with every problem, when a model
    does not fit its pool."""
    pools = cfg.cluster.pools
    # parse_config has made sure that every model on GPUs names a pool of the cluster.
    on_gpus = {m.name: pools[m.gpu_pool] for m in cfg.models if not cfg.is_simulated(m) and m.gpu_pool}
    sized = {m.name: fit.size(m, on_gpus[m.name]) for m in cfg.models if m.name in on_gpus}
    problems = [p for m in cfg.models if m.name in on_gpus for p in fit.model_problems(m, on_gpus[m.name], sized[m.name])]
    sized_on: dict[str, list[fit.ModelSizing]] = {}
    for found in sized.values():
        if found is not None:
            sized_on.setdefault(found.pool.name, []).append(found)
    problems += fit.pool_problems(cfg.cluster.gpu_node_pools, sized_on)
    weights = {m.name: _weights(cfg, m, _parameters(m, sized.get(m.name))) for m in cfg.models}
    existing = cfg.cluster.existing is not None
    problems += [p for s in sized.values() if s is not None for p in fit.node_disk_problems(s, weights[s.model.name].streams, existing)]
    if problems:
        raise ConfigError(problems)
    cold_starts = {m.name: _cold_start(cfg, m, sized.get(m.name), weights[m.name]) for m in cfg.models}
    pool_plans = {p.name: pool_plan(p, sized_on.get(p.name, []), cold_starts, existing) for p in cfg.cluster.gpu_node_pools}
    models = tuple(
        _model_plan(
            cfg, m, sized.get(m.name), pool_plans[on_gpus[m.name].name] if m.name in on_gpus else None, weights[m.name], cold_starts[m.name]
        )
        for m in cfg.models
    )
    plan = Plan(
        config=cfg,
        models=models,
        pools=tuple(pool_plans.values()),
        notes=tuple(notes.config_notes(cfg, models, cfg.cluster.gpu_node_pools, sized_on)),
        gateway=gateway_plan(cfg, models),
        docker_hub_route=delivery.docker_hub_route(cfg),
        runs_gpu_metrics=cfg.runs_gpu_metrics,
        caches_models=cfg.caches_models,
    )
    # What the system nodes must hold depends on the whole plan: the gateway, the staging Jobs, the add-ons.
    if problems := system.system_node_problems(plan):
        raise ConfigError(problems)
    return plan
