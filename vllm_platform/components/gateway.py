"""The gateway: Envoy Gateway and Envoy AI Gateway as pinned releases, the keys' Secret, the rate-limit store and
the Gateway API objects; the manifests and values come from `vllm_platform.k8s.gateway`."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from vllm_platform.components.helm import helm_release
from vllm_platform.components.model import custom_resource
from vllm_platform.contract import GATEWAY_KEYS_SECRET, GATEWAY_NAME, GATEWAY_NAMESPACE
from vllm_platform.k8s import gateway as manifests
from vllm_platform.k8s import gateway_charts
from vllm_platform.pins import AI_GATEWAY, AI_GATEWAY_CRDS, ENVOY_GATEWAY
from vllm_platform.plan.plans import Plan

# How long `pulumi up` waits for a gateway Service: its proxies' start and, where they carry the readiness gate,
# the NLB's provisioning, target registration and health checks (see LlmGateway), with room for each.
SERVICE_CREATE_TIMEOUT = "20m"

BUILT_IN = {
    "Deployment": k8s.apps.v1.Deployment,
    "Service": k8s.core.v1.Service,
    "NetworkPolicy": k8s.networking.v1.NetworkPolicy,
}


def _load_balancer_host(status: Any) -> str:
    """The NLB's DNS name from the Service's status (`pulumi up` waits until the controller has written it)."""
    ingress = status.load_balancer.ingress if status is not None and status.load_balancer is not None else None
    return ingress[0].hostname if ingress else ""


class LlmGateway(pulumi.ComponentResource):
    """Contract: `outputs` are the stack outputs it owns (`endpoint`, `inClusterEndpoint`, `gateway`); `after` is
    what must exist first (the load balancer controller, for an NLB); `monitoring` the releases that install the
    PodMonitor CRD; `docker_hub_registry` where Docker Hub's images come from (None: from Docker Hub)."""

    outputs: dict[str, Any]

    def __init__(
        self,
        name: str,
        plan: Plan,
        after: Sequence[pulumi.Resource] = (),
        monitoring: Sequence[pulumi.Resource] = (),
        docker_hub_registry: Optional[str] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        super().__init__("vllm-platform:index:LlmGateway", name, None, opts)
        gateway = plan.gateway
        assert gateway is not None, "built only for a stack with the gateway enabled"
        child = pulumi.ResourceOptions(parent=self)
        namespaces = [k8s.core.v1.Namespace(n["metadata"]["name"], metadata=n["metadata"], opts=child) for n in manifests.gateway_namespaces()]
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=namespaces)

        store = [
            BUILT_IN[o["kind"]](f"{o['metadata']['name']}-{o['kind'].lower()}", metadata=o["metadata"], spec=o["spec"], opts=in_namespace)
            for o in manifests.redis_objects()
        ]
        envoy = helm_release(
            ENVOY_GATEWAY,
            gateway_charts.envoy_gateway_values(docker_hub_registry),
            pulumi.ResourceOptions(parent=self, depends_on=[*namespaces, *store]),
        )
        crds = helm_release(AI_GATEWAY_CRDS, {}, pulumi.ResourceOptions(parent=self, depends_on=namespaces))
        # Its mutating webhook puts the extproc beside every proxy: it must run before the Gateway makes them.
        controller = helm_release(
            AI_GATEWAY,
            gateway_charts.ai_gateway_values(docker_hub_registry),
            pulumi.ResourceOptions(parent=self, depends_on=[crds, envoy]),
            skip_crds=True,
        )
        keys = k8s.core.v1.Secret(
            GATEWAY_KEYS_SECRET,
            metadata=manifests.api_keys_secret_metadata(),
            type="Opaque",
            string_data={
                client: pulumi.Output.secret(value)
                for client, value in manifests.api_keys_secret_data([(c.name, c.api_key) for c in plan.config.gateway.clients]).items()
            },
            opts=in_namespace,
        )
        created: dict[tuple[str, str], Any] = {}
        for m in manifests.routed_objects(plan, docker_hub_registry):
            key = (m["kind"], m["metadata"]["name"])
            # The Gateway comes after what its proxies are made from: Envoy Gateway reads its class and EnvoyProxy,
            # and AI Gateway's pod webhook its GatewayConfig, when it creates a proxy pod; a GatewayConfig that is
            # not there yet gives the extproc the global defaults until the proxies next roll.
            first = list(created.values()) if key == ("Gateway", GATEWAY_NAME) else []
            routed = pulumi.ResourceOptions(parent=self, depends_on=[envoy, controller, keys, *first])
            created[key] = custom_resource(f"{m['metadata']['name']}-{m['kind'].lower()}", m, routed)
        # Both Services front the proxies Envoy Gateway makes of this Gateway, so they come after it: pulumi-kubernetes
        # waits on a new Service until it has the NLB's name and no endpoint is unready (provider/pkg/await/service.go,
        # v4.32.0), which with the proxies there means the door serves; made before them, an empty Service passes at
        # once. The first proxies predate the NLB's target group binding and so lack the controller's readiness gate,
        # added at a pod's creation only (docs/deploy/pod_readiness_gate.md, v3.5.0): no traffic reaches them yet, and
        # every later pod has it. A proxy with the gate is ready only once healthy in the NLB's target group: the
        # NLB's provisioning, the target's registration and its health checks, minutes each, can outlast the
        # provider's 10-minute default.
        backed = [*namespaces, created[("Gateway", GATEWAY_NAME)]]
        timeouts = pulumi.CustomTimeouts(create=SERVICE_CREATE_TIMEOUT)
        # The NLB's Service is made after the controller that makes its NLB, and so deleted before it.
        door = manifests.proxy_service(gateway)
        service = k8s.core.v1.Service(
            "llm-gateway-service",
            metadata=door["metadata"],
            spec=door["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*backed, *after], custom_timeouts=timeouts),
        )
        inside = manifests.cluster_service(gateway)
        if inside is not None:
            k8s.core.v1.Service(
                "llm-gateway-cluster-service",
                metadata=inside["metadata"],
                spec=inside["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=backed, custom_timeouts=timeouts),
            )
        if plan.config.observability.creates_service_monitors:
            custom_resource("llm-gateway-podmonitor", manifests.pod_monitor(), pulumi.ResourceOptions(parent=self, depends_on=list(monitoring)))

        # `pulumi up` waits for a LoadBalancer Service until the controller has made its NLB; its name is unknown
        # at preview.
        hostname: Any = (
            service.status.apply(_load_balancer_host)
            if gateway.load_balanced
            else manifests.cluster_host(gateway)
        )
        self.outputs = {
            "endpoint": pulumi.Output.from_input(hostname).apply(lambda host: manifests.endpoint(gateway, host)),
            # The door of the pods in the cluster, whatever the exposure: an NLB admits only its allowlist.
            "inClusterEndpoint": manifests.cluster_endpoint(gateway),
            "gateway": {
                "namespace": GATEWAY_NAMESPACE,
                "service": manifests.proxy_service_name(),
                "hostname": gateway.hostname or hostname,
                "exposure": gateway.exposure.value,
            },
        }
        self.register_outputs(self.outputs)
