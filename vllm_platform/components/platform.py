"""The whole platform: cluster, namespace, token Secret, observability and one VllmModel per model."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from vllm_platform.components.cluster import PlatformCluster
from vllm_platform.components.delivery import pulled_image
from vllm_platform.components.gateway import LlmGateway
from vllm_platform.components.model import VllmModel
from vllm_platform.components.observability import Observability
from vllm_platform.components.rollout import Rollouts
from vllm_platform.contract import HF_TOKEN_SECRET, HF_TOKEN_SECRET_KEY
from vllm_platform.k8s import warm
from vllm_platform.k8s.network import namespace, network_policies
from vllm_platform.k8s.workload import hf_token_secret_metadata
from vllm_platform.plan.plans import ModelPlan, Plan


def _weights_uri(model: ModelPlan, cache_bucket: Any) -> Any:
    """vLLM's --model: the plan's own, or for the stack's own cache, the URI below the bucket once it is named."""
    if model.weights.model is not None:
        return model.weights.model
    return pulumi.Output.from_input(cache_bucket).apply(model.weights.uri)


def _warm_nodes(plan: Plan, images: dict[str, Any], opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """Each pool's placeholder Deployment, holding its warm nodes with its models' images pulled."""
    pools = [p for p in plan.pools if p.warm_nodes]
    if not pools:
        return []
    manifest = warm.priority_class()
    priority = k8s.scheduling.v1.PriorityClass(
        warm.PRIORITY_CLASS,
        metadata=manifest["metadata"],
        value=manifest["value"],
        preemption_policy=manifest["preemptionPolicy"],
        global_default=manifest["globalDefault"],
        description=manifest["description"],
        opts=opts,
    )
    created: list[pulumi.Resource] = [priority]
    for pool in pools:
        # One container per image the pool's models use, so a warm node holds each of them.
        by_reference = {m.image: images[m.name] for m in plan.models if m.pool is not None and m.pool.name == pool.name}
        placeholder = warm.placeholder(plan, pool, list(by_reference.values()))
        deployment = k8s.apps.v1.Deployment(
            warm.name(pool),
            metadata=placeholder["metadata"],
            spec=placeholder["spec"],
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[priority])),
        )
        created.append(deployment)
    return created


def build_platform(plan: Plan) -> dict[str, Any]:
    """Create every resource of the stack; return the stack outputs by name."""
    cluster = PlatformCluster("cluster", plan)
    k8s_opts = pulumi.ResourceOptions(providers=[cluster.provider], depends_on=cluster.ready)
    manifest = namespace(plan)
    models_namespace = k8s.core.v1.Namespace(plan.namespace, metadata=manifest["metadata"], opts=k8s_opts)
    in_namespace = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[models_namespace]))

    # Everything but the rollouts' wait, which comes after all of it (see below).
    created: list[pulumi.Resource] = [cluster, models_namespace]
    created += [
        k8s.networking.v1.NetworkPolicy(policy["metadata"]["name"], metadata=policy["metadata"], spec=policy["spec"], opts=in_namespace)
        for policy in network_policies(plan)
    ]

    # The models' Docker Hub images and the platform's own (Grafana, the gateway's) come the same way.
    observability = Observability("observability", plan, cluster.image_registry, opts=k8s_opts)
    created.append(observability)

    token_secret = None
    if plan.config.hf_token is not None:
        token_secret = k8s.core.v1.Secret(
            HF_TOKEN_SECRET,
            metadata=hf_token_secret_metadata(plan),
            type="Opaque",
            string_data={HF_TOKEN_SECRET_KEY: pulumi.Output.secret(plan.config.hf_token)},
            opts=in_namespace,
        )
        created.append(token_secret)

    images = {model.name: pulled_image(model, cluster.image_registry) for model in plan.models}
    models = {
        model.name: VllmModel(
            plan,
            model,
            prometheus_url=observability.prometheus_url,
            http_scaler_address=observability.http_scaler_address,
            interceptor_host=observability.interceptor_host,
            hf_token_secret=token_secret,
            crd_dependencies=observability.crd_dependencies,
            weights_uri=_weights_uri(model, cluster.cache_bucket),
            cache_bucket=cluster.cache_bucket,
            image=images[model.name],
            region=cluster.region,
            kubeconfig=cluster.kubeconfig,
            context=cluster.context,
            opts=in_namespace,
        )
        for model in plan.models
    }
    created += [*models.values(), *_warm_nodes(plan, images, in_namespace)]
    gateway_outputs: dict[str, Any] = {}
    if plan.gateway is not None:
        gateway = LlmGateway(
            "gateway", plan, after=cluster.load_balancer_controller, monitoring=observability.crd_dependencies,
            docker_hub_registry=cluster.image_registry, opts=k8s_opts,
        )  # fmt: skip
        gateway_outputs = gateway.outputs
        created.append(gateway)
    # `pulumi up` waits here for every model's rollout, and fails with the reason as soon as one cannot finish.
    # Last of all: once one resource fails, `pulumi up` starts no other, so a model that cannot get a node (a
    # p4d EC2 cannot supply) fails the update only after the rest of the stack (the other models, the
    # observability, the gateway) is in place.
    Rollouts(
        "rollouts",
        {name: component.rollout for name, component in models.items()},
        cluster.kubeconfig,
        cluster.context,
        opts=pulumi.ResourceOptions(depends_on=created),
    )
    return {
        **cluster.outputs,
        "namespace": models_namespace.metadata.apply(lambda m: m["name"]),
        "models": {name: component.outputs for name, component in models.items()},
        **observability.outputs,
        **gateway_outputs,
    }
