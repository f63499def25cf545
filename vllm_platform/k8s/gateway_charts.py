"""The chart values of the gateway's releases: Envoy Gateway (gateway-helm v1.9.0) and Envoy AI Gateway
(ai-gateway-helm v1.1.0), configured as AI Gateway's manifests/envoy-gateway-values.yaml and
examples/token_ratelimit/envoy-gateway-values-addon.yaml (v1.1.0) say; the objects are in k8s/gateway.py.

One difference from the addon: it patches the rate limit's image to envoyproxy/ratelimit:60d8e81b (of January
2025, Envoy Gateway 1.3's default), while gateway-helm v1.9.0's own default, 17b1956c, is newer (envoyproxy/gateway
#9757, 2026-08-15, "bump ratelimit version"): the chart's default is kept, the release it was tested with."""

from __future__ import annotations

from typing import Any, Optional

from vllm_platform.contract import CLIENT_ID_HEADER, GATEWAY_NAMESPACE, SYSTEM_NODE_SELECTOR, images
from vllm_platform.k8s.gateway import (
    AI_GATEWAY_CONTROLLER,
    CLIENT_METRIC_ATTRIBUTE,
    EXTENSION_SERVER_PORT,
    GATEWAY_CONTROLLER,
    REDIS,
    REDIS_PORT,
    system_placement,
)
from vllm_platform.pins import AI_GATEWAY, ENVOY_GATEWAY
from vllm_platform.plan import system

# ai-gateway-helm v1.1.0's own image repositories (values.yaml), on Docker Hub.
AI_GATEWAY_REPOSITORIES = {
    "controller": "docker.io/envoyproxy/ai-gateway-controller",
    "extProc": "docker.io/envoyproxy/ai-gateway-extproc",
}


def envoy_gateway_values(docker_hub_registry: Optional[str] = None) -> dict[str, Any]:
    """gateway-helm v1.9.0: two controllers with a PDB, on the system nodes, configured as AI Gateway's
    manifests/envoy-gateway-values.yaml and examples/token_ratelimit/envoy-gateway-values-addon.yaml (v1.1.0) say.
    `docker_hub_registry`: where Docker Hub's images come from, for the controller's and the rate limit's."""
    pulled = {"global": {"imageRegistry": docker_hub_registry}} if docker_hub_registry else {}
    return {
        **pulled,
        "deployment": {
            "replicas": system.CONTROLLER_REPLICAS,
            "envoyGateway": {"resources": {"requests": system.ENVOY_GATEWAY.resources(), "limits": {"memory": "1024Mi"}}},
            "pod": system_placement(),
        },
        "podDisruptionBudget": {"minAvailable": 1},
        # The job that writes the controller's and proxies' TLS Secret at install and upgrade.
        "certgen": {
            "job": {
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                **system_placement(),
            }
        },
        "config": {
            "envoyGateway": {
                "gateway": {"controllerName": GATEWAY_CONTROLLER},
                "logging": {"level": {"default": "info"}},
                "extensionApis": {"enableEnvoyPatchPolicy": True, "enableBackend": True},
                "extensionManager": {
                    "hooks": {
                        "xdsTranslator": {
                            "translation": {kind: {"includeAll": True} for kind in ("listener", "route", "cluster", "secret")},
                            "post": ["Translation", "Cluster", "Route"],
                        }
                    },
                    "service": {
                        "fqdn": {
                            "hostname": f"{AI_GATEWAY_CONTROLLER}.{AI_GATEWAY.namespace}.svc.cluster.local",
                            "port": EXTENSION_SERVER_PORT,
                        }
                    },
                },
                # The rate limit service Envoy Gateway runs: every proxy asks it before a request goes on, so
                # two replicas with a PDB, as the proxies have, on the system nodes.
                "provider": {
                    "type": "Kubernetes",
                    "kubernetes": {
                        "rateLimitDeployment": {
                            "replicas": system.CONTROLLER_REPLICAS,
                            "pod": system_placement(),
                            "container": {"resources": {"requests": system.RATE_LIMIT.resources(), "limits": {"memory": "512Mi"}}},
                        },
                        "rateLimitPDB": {"minAvailable": 1},
                    }
                },
                "rateLimit": {
                    "backend": {"type": "Redis", "redis": {"url": f"{REDIS}.{GATEWAY_NAMESPACE}.svc.cluster.local:{REDIS_PORT}"}}
                },
            }
        },
    }


def ai_gateway_values(docker_hub_registry: Optional[str] = None) -> dict[str, Any]:
    """ai-gateway-helm v1.1.0: two controllers with a PDB on the system nodes; the client's name as a metrics label.
    `docker_hub_registry`: where Docker Hub's images come from, for the controller's and the extproc's."""
    values: dict[str, Any] = {
        "controller": {
            "replicaCount": system.CONTROLLER_REPLICAS,
            "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
            "resources": {"requests": system.AI_GATEWAY_CONTROLLER.resources(), "limits": {"memory": "512Mi"}},
            "nodeSelector": dict(SYSTEM_NODE_SELECTOR),
            # Beside the chart's own context (non-root, no capabilities), which Helm merges in: the controller writes
            # no file (v1.1.0's cmd/controller and internal/controller open none for writing; its certificates are
            # a read-only Secret mount), so its root filesystem can be read-only.
            "securityContext": {"readOnlyRootFilesystem": True},
            "metricsRequestHeaderAttributes": f"{CLIENT_ID_HEADER}:{CLIENT_METRIC_ATTRIBUTE}",
        },
        "envoyGateway": {"namespace": ENVOY_GATEWAY.namespace},
    }
    if docker_hub_registry:
        # The chart's own repositories below the registry; the tag stays the chart's appVersion.
        for component, repository in AI_GATEWAY_REPOSITORIES.items():
            values.setdefault(component, {})["image"] = {"repository": images.below_mirror(docker_hub_registry, repository)}
    return values
