"""The whole program: cluster, namespace, token Secret, observability and one VllmModel per model."""

from __future__ import annotations

from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from components import vllm_spec
from components.cluster import PlatformCluster
from components.config import PlatformConfig
from components.observability import Observability
from components.vllm_model import VllmModel


def build_platform(cfg: PlatformConfig, hf_token: Optional[pulumi.Output[str]]) -> dict[str, Any]:
    """Create every resource of the stack; return the stack outputs by name."""
    cluster = PlatformCluster("cluster", cfg)
    k8s_opts = pulumi.ResourceOptions(providers=[cluster.provider], depends_on=cluster.ready)
    manifest = vllm_spec.namespace(cfg)
    namespace = k8s.core.v1.Namespace(cfg.namespace, metadata=manifest["metadata"], opts=k8s_opts)
    in_namespace = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[namespace]))

    for policy in vllm_spec.network_policies(cfg):
        k8s.networking.v1.NetworkPolicy(
            policy["metadata"]["name"], metadata=policy["metadata"], spec=policy["spec"], opts=in_namespace
        )

    observability = Observability("observability", cfg, opts=k8s_opts)

    token_secret = None
    if hf_token is not None:
        token_secret = k8s.core.v1.Secret(
            vllm_spec.HF_TOKEN_SECRET,
            metadata=vllm_spec.hf_token_secret_metadata(cfg),
            type="Opaque",
            string_data={vllm_spec.HF_TOKEN_SECRET_KEY: hf_token},
            opts=in_namespace,
        )

    models = {
        model.name: VllmModel(
            model.name,
            cfg,
            model,
            prometheus_url=observability.prometheus_url,
            http_scaler_address=observability.http_scaler_address,
            interceptor_host=observability.interceptor_host,
            hf_token_secret=token_secret,
            crd_dependencies=observability.crd_dependencies,
            opts=in_namespace,
        )
        for model in cfg.models
    }
    return {
        **cluster.outputs,
        "namespace": namespace.metadata.apply(lambda m: m["name"]),
        "models": {name: component.outputs for name, component in models.items()},
        **observability.outputs,
    }
