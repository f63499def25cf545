"""Namespaces and who may reach the models: default-deny ingress, the serving port open to clients and scrapers."""

from __future__ import annotations

from typing import Any

from vllm_platform.contract import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    KEDA_NAMESPACE,
    MODEL_APP,
    MONITOR_SELECTOR_LABELS,
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    SERVING_PORT,
)
from vllm_platform.k8s.gateway import proxy_peer
from vllm_platform.pins import KEDA_HTTP_ADD_ON
from vllm_platform.plan.plans import Plan

# Where the add-on's scaler reads the interceptor's request counts; pinned so the NetworkPolicy matches.
INTERCEPTOR_ADMIN_PORT = 9090


def namespace(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": plan.namespace,
            "labels": {
                PART_OF_LABEL: PART_OF,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def platform_namespace(name: str, privileged: bool = False) -> dict[str, Any]:
    labels = dict(MONITOR_SELECTOR_LABELS)
    if privileged:
        # node-exporter and the DCGM exporter read the host (hostPID, hostNetwork, SYS_ADMIN).
        labels["pod-security.kubernetes.io/enforce"] = "privileged"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _from_namespaces(names: list[str]) -> list[dict[str, Any]]:
    return [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": names}]}}]


def direct_clients(plan: Plan) -> list[str]:
    """The namespaces that may call the models without the gateway: clientNamespaces, unless the gateway's
    directAccess is false and it is the only door."""
    if plan.gateway is not None and not plan.gateway.direct_access:
        return []
    return list(plan.config.client_namespaces)


def network_policies(plan: Plan) -> list[dict[str, Any]]:
    """Deny all ingress in the namespace, then open the serving port to clients and to Prometheus only."""
    cfg = plan.config
    metadata = {"namespace": plan.namespace, "labels": {PART_OF_LABEL: PART_OF}}
    interceptor = [KEDA_NAMESPACE] if plan.any_scales_to_zero else []
    allowed = sorted({*direct_clients(plan), *cfg.observability.scraper_namespaces, *interceptor})
    peers = _from_namespaces(allowed) + ([proxy_peer()] if plan.gateway is not None else [])
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {**metadata, "name": "default-deny-ingress"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {**metadata, "name": "allow-serving-port"},
            "spec": {
                "podSelector": {"matchLabels": {NAME_LABEL: MODEL_APP}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": peers, "ports": [{"port": SERVING_PORT, "protocol": "TCP"}]}],
            },
        },
    ]


def interceptor_network_policy(plan: Plan) -> dict[str, Any]:
    """The interceptor forwards to every model at zero: only the models' clients may reach its proxy port,
    or any pod in the cluster could call those models around the models' own NetworkPolicy."""
    callers = sorted({*direct_clients(plan), plan.namespace})
    peers = _from_namespaces(callers) + ([proxy_peer()] if plan.gateway is not None else [])
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "interceptor-ingress", "namespace": KEDA_NAMESPACE, "labels": dict(MONITOR_SELECTOR_LABELS)},
        "spec": {
            "podSelector": {"matchLabels": {COMPONENT_LABEL: "interceptor", INSTANCE_LABEL: KEDA_HTTP_ADD_ON.release}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": peers, "ports": [{"port": SERVING_PORT, "protocol": "TCP"}]},
                # The add-on's scaler, beside it in this namespace, polls the request counts.
                {"from": [{"podSelector": {}}], "ports": [{"port": INTERCEPTOR_ADMIN_PORT, "protocol": "TCP"}]},
            ],
        },
    }
