"""The gateway's plan: one route per model, by the name clients send, and each client's models and budget."""

from __future__ import annotations

from typing import Optional

from vllm_platform.config.platform import PlatformConfig
from vllm_platform.plan.plans import GatewayClient, GatewayPlan, GatewayRoute, ModelPlan

HTTP_PORT, HTTPS_PORT = 80, 443


def gateway_plan(cfg: PlatformConfig, models: tuple[ModelPlan, ...]) -> Optional[GatewayPlan]:
    gateway = cfg.gateway
    if not gateway.enabled:
        return None
    served = {m.name: m.served_name for m in models}
    routes = tuple(
        GatewayRoute(
            model=m.name,
            served_name=m.served_name,
            backend_host=m.service_host,
            through_interceptor=m.scales_to_zero,
            clients=tuple(c.name for c in gateway.clients if m.name in c.models),
        )
        for m in models
    )
    clients = tuple(
        GatewayClient(
            name=c.name,
            served_names=tuple(served[name] for name in c.models),
            tokens_per_minute=c.tokens_per_minute,
            counts=c.counts,
        )
        for c in gateway.clients
    )
    return GatewayPlan(
        exposure=gateway.exposure,
        port=HTTPS_PORT if gateway.tls is not None else HTTP_PORT,
        scheme=gateway.scheme,
        hostname=gateway.hostname,
        certificate_arn=gateway.tls.certificate_arn if gateway.tls is not None else None,
        allowed_source_cidrs=tuple(gateway.allowed_source_cidrs),
        direct_access=gateway.direct_access,
        replicas=gateway.replicas,
        routes=routes,
        clients=clients,
    )
