"""The gateway's objects and chart values: Envoy Gateway and Envoy AI Gateway, one Gateway, a route per model,
API keys, token budgets, and the NLB the AWS Load Balancer Controller makes of the proxies' Service.

How a request goes: the NLB (TLS there, with an ACM certificate) -> an Envoy proxy, whose filters run in
Envoy Gateway's order (internal/xds/translator/httpfilters.go at v1.9.0): the custom responses (OpenAI's error
shape for every refusal below), the API key (401 without a valid one; the client's name forwarded in
CLIENT_ID_HEADER), the request buffer, AI Gateway's extproc (the body's `model` into MODEL_HEADER; it answers
GET /v1/models itself), the authorization rules (403 for a model outside the client's list), the token rate
limit (429), then the route of the model -> its Service, or for a model at zero the interceptor's entry, which
wakes it. AI Gateway inserts its extproc before the first of the custom response, ext_proc, RBAC, rate limit and
router filters, but after the last buffer filter (insertAIGatewayExtProcFilter,
internal/extensionserver/post_translate_modify.go at v1.1.0): without the buffer the custom response filter,
first of all, would put the extproc before the key check, and an unauthenticated GET /v1/models would be answered.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from vllm_platform.config.gateway import Exposure, TokenKind
from vllm_platform.contract import (
    AI_GATEWAY_API,
    AI_GATEWAY_NAMESPACE,
    AI_GATEWAY_ROUTE,
    CLIENT_ID_HEADER,
    COMPONENT_LABEL,
    ENVOY_GATEWAY_API,
    ENVOY_PROXY,
    GATEWAY_KEYS_SECRET,
    GATEWAY_NAME,
    GATEWAY_NAMESPACE,
    GATEWAY_ROUTES_NAMESPACE,
    HOSTNAME_LABEL,
    INSTANCE_LABEL,
    Kind,
    METRICS_PATH,
    MODEL_HEADER,
    MONITOR_SELECTOR_LABELS,
    NAME_LABEL,
    NLB_ANNOTATION,
    PART_OF,
    PART_OF_LABEL,
    SECURITY_POLICY,
    SERVING_PORT,
    SYSTEM_NODE_SELECTOR,
    images,
)
from vllm_platform.pins import ENVOY_PROXY_IMAGE, RATE_LIMIT_REDIS_IMAGE
from vllm_platform.plan import system
from vllm_platform.plan.plans import GatewayClient, GatewayPlan, GatewayRoute, Plan

GATEWAY_API = "gateway.networking.k8s.io/v1"
BACKEND_TRAFFIC_POLICY = Kind(ENVOY_GATEWAY_API, "BackendTrafficPolicy")
CLIENT_TRAFFIC_POLICY = Kind(ENVOY_GATEWAY_API, "ClientTrafficPolicy")
GATEWAY_CLASS = "vllm-platform"
# Envoy Gateway's GatewayClass controller, as AI Gateway's envoy-gateway-values.yaml (v1.1.0) names it.
GATEWAY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
PROXY_CONFIG = "llm-gateway-proxy"
LISTENER = "http"
# The proxies' listener, above 1024 so that Envoy Gateway opens it in the pod as it is; the client port maps onto it.
PROXY_LISTENER_PORT = 8080
# The in-cluster door beside an NLB, and its port: plain HTTP on its default port, onto the same listener.
CLUSTER_SERVICE = f"{GATEWAY_NAME}-cluster"
CLUSTER_PORT = 80
# AI Gateway's controller: the chart's fullnameOverride, its extension server's gRPC port (the chart's Service).
AI_GATEWAY_CONTROLLER = "ai-gateway-controller"
EXTENSION_SERVER_PORT = 1063
# The metadata namespace AI Gateway writes each response's token counts in, and its keys as llmRequestCosts name them.
COST_METADATA_NAMESPACE = "io.envoy.ai_gateway"
TOKEN_METADATA_KEYS = {TokenKind.INPUT: "llm_input_token", TokenKind.OUTPUT: "llm_output_token", TokenKind.TOTAL: "llm_total_token"}
TOKEN_COST_TYPES = {TokenKind.INPUT: "InputToken", TokenKind.OUTPUT: "OutputToken", TokenKind.TOTAL: "TotalToken"}
# The metrics label AI Gateway's extproc gives CLIENT_ID_HEADER (metricsRequestHeaderAttributes); Prometheus
# sees `client_id`.
CLIENT_METRIC_ATTRIBUTE = "client.id"
# Envoy Gateway's global rate limit keeps its counters in Redis, a single replica in the gateway's namespace:
# a restart forgets the current minute's counts, no more.
REDIS = "gateway-ratelimit-redis"
REDIS_PORT = 6379
# The largest request body the gateway takes, which its buffer holds whole (413 above it): a 128k-token prompt
# is about 0.5 MB of text, and base64 images a few MB each.
REQUEST_BODY_LIMIT = "16Mi"
# AI Gateway's GatewayConfig a Gateway names in this annotation (internal/controller/ai_gateway_route.go, v1.1.0).
GATEWAY_CONFIG_ANNOTATION = "aigateway.envoyproxy.io/gateway-config"
# What OpenAI clients wait by default: a long non-streamed generation must not be cut off sooner.
REQUEST_TIMEOUT = "600s"
# Envoy Gateway's pod labels on every proxy of a Gateway.
OWNING_GATEWAY_LABEL = "gateway.envoyproxy.io/owning-gateway-name"
OWNING_GATEWAY_NAMESPACE_LABEL = "gateway.envoyproxy.io/owning-gateway-namespace"
PROXY_METRICS_PORT = "metrics"
EXTPROC_METRICS_PORT = "aigw-admin"
ENVOY_METRICS_PATH = "/stats/prometheus"
NLB_CLASS = "service.k8s.aws/nlb"
READINESS_GATE_LABEL = "elbv2.k8s.aws/pod-readiness-gate-inject"
# An NLB closes a flow that carries nothing for 350 s (fixed on TLS listeners; AWS, "Update the TCP idle timeout
# for your Network Load Balancer listener", read 2026-12-03), and a non-streamed generation, or a request waiting
# for a model's cold start, can be silent longer than that. Keepalive probes reset that timer: Envoy sends them
# on every downstream connection after a minute of silence.
DOWNSTREAM_KEEPALIVE = {"idleTime": "60s", "interval": "30s", "probes": 3}


def _labels(component: str) -> dict[str, str]:
    return {NAME_LABEL: "llm-gateway", INSTANCE_LABEL: GATEWAY_NAME, COMPONENT_LABEL: component, PART_OF_LABEL: PART_OF}


def _metadata(name: str, component: str, namespace: str = GATEWAY_ROUTES_NAMESPACE) -> dict[str, Any]:
    """In the routes' namespace unless said: the Gateway API objects and the keys live there, the proxies, the
    Service in front of them and the rate-limit store beside Envoy Gateway."""
    return {"name": name, "namespace": namespace, "labels": _labels(component)}


def proxy_service_name() -> str:
    """The Service clients reach the proxies through."""
    return GATEWAY_NAME


def cluster_service_name(gateway: GatewayPlan) -> str:
    """The Service pods in the cluster call the proxies through: the proxies' own where it is a ClusterIP; beside
    an NLB's, one of its own, since the NLB's port is 443 with TLS, which only the NLB speaks."""
    return CLUSTER_SERVICE if gateway.load_balanced else proxy_service_name()


def cluster_host(gateway: GatewayPlan) -> str:
    return f"{cluster_service_name(gateway)}.{GATEWAY_NAMESPACE}.svc.cluster.local"


def _base_url(scheme: str, host: str, port: int) -> str:
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}{'' if port == default else f':{port}'}/v1"


def endpoint(gateway: GatewayPlan, load_balancer_host: str) -> str:
    """The OpenAI base URL: the configured hostname, else the NLB's name, else the in-cluster Service."""
    host = gateway.hostname or (load_balancer_host if gateway.load_balanced else cluster_host(gateway))
    return _base_url(gateway.scheme, host, gateway.port)


def cluster_endpoint(gateway: GatewayPlan) -> str:
    """The OpenAI base URL for pods in the cluster, plain HTTP as the NLB's own hop to the proxies is: an NLB
    admits only its allowlist, which the cluster's own traffic (through the NAT gateways) is not on."""
    return _base_url("http", cluster_host(gateway), CLUSTER_PORT)


def system_placement() -> dict[str, Any]:
    return {"nodeSelector": dict(SYSTEM_NODE_SELECTOR)}


def gateway_class() -> dict[str, Any]:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS, "labels": _labels("gateway")},
        "spec": {"controllerName": GATEWAY_CONTROLLER},
    }


def _service_annotations(gateway: GatewayPlan) -> dict[str, str]:
    """The NLB the AWS Load Balancer Controller makes of the proxies' Service: IP targets (the pods themselves),
    the scheme by exposure, TLS at the NLB with the ACM certificate where one is given."""
    annotations = {
        f"{NLB_ANNOTATION}nlb-target-type": "ip",
        f"{NLB_ANNOTATION}scheme": "internet-facing" if gateway.exposure is Exposure.INTERNET else "internal",
        f"{NLB_ANNOTATION}target-group-attributes": "deregistration_delay.timeout_seconds=60",
    }
    if gateway.certificate_arn is not None:
        annotations[f"{NLB_ANNOTATION}ssl-cert"] = gateway.certificate_arn
        annotations[f"{NLB_ANNOTATION}ssl-ports"] = str(gateway.port)
        annotations[f"{NLB_ANNOTATION}ssl-negotiation-policy"] = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    return annotations


def envoy_proxy(gateway: GatewayPlan, docker_hub_registry: Optional[str] = None) -> dict[str, Any]:
    """The proxies: replicas spread over nodes with a PDB, requests, on the system nodes. Envoy Gateway's own
    Service for them stays inside the cluster; clients come through `proxy_service`. Where Docker Hub's images
    come from `docker_hub_registry`, so does their Envoy (Envoy Gateway's default image, otherwise)."""
    image = {"image": images.below_mirror(docker_hub_registry, ENVOY_PROXY_IMAGE)} if docker_hub_registry else {}
    return {
        "apiVersion": ENVOY_PROXY.api_version,
        "kind": ENVOY_PROXY.kind,
        "metadata": _metadata(PROXY_CONFIG, "gateway"),
        "spec": {
            "provider": {
                "type": "Kubernetes",
                "kubernetes": {
                    "envoyDeployment": {
                        "replicas": gateway.replicas,
                        "container": {
                            **image,
                            "resources": {"requests": system.ENVOY_PROXY.resources(), "limits": {"memory": "2Gi"}},
                        },
                        "pod": {
                            **system_placement(),
                            "topologySpreadConstraints": [
                                {
                                    "maxSkew": 1,
                                    "topologyKey": HOSTNAME_LABEL,
                                    "whenUnsatisfiable": "ScheduleAnyway",
                                    "labelSelector": {"matchLabels": {OWNING_GATEWAY_LABEL: GATEWAY_NAME}},
                                }
                            ],
                        },
                    },
                    "envoyPDB": {"minAvailable": 1},
                    "envoyService": {"name": f"{GATEWAY_NAME}-envoy", "type": "ClusterIP"},
                },
            }
        },
    }


def proxy_service(gateway: GatewayPlan) -> dict[str, Any]:
    """The door clients use, the program's own so that `pulumi up` waits for its NLB and reads its name: the
    client port (443 with TLS at the NLB, else 80) onto the proxies' listener. `internal` and `internet` make it
    an NLB through the AWS Load Balancer Controller, with IP targets (the pods themselves, no node hop)."""
    spec = _proxies_spec(gateway.port)
    metadata = _metadata(proxy_service_name(), "gateway", GATEWAY_NAMESPACE)
    if gateway.load_balanced:
        spec.update(type="LoadBalancer", loadBalancerClass=NLB_CLASS)
        if gateway.allowed_source_cidrs:
            # The NLB's security group admits only these. Without them the controller opens it to 0.0.0.0/0
            # (buildCIDRsFromSourceRanges, pkg/service/model_build_managed_sg.go at v3.5.0), internal NLB or
            # not: whatever is routed into the VPC (peering, a transit gateway, a VPN) reaches it.
            spec["loadBalancerSourceRanges"] = list(gateway.allowed_source_cidrs)
        metadata["annotations"] = _service_annotations(gateway)
    else:
        spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def _proxies_spec(port: int) -> dict[str, Any]:
    """A Service of the Gateway's proxies: `port` onto their listener."""
    return {
        "selector": {OWNING_GATEWAY_LABEL: GATEWAY_NAME, OWNING_GATEWAY_NAMESPACE_LABEL: GATEWAY_ROUTES_NAMESPACE},
        "ports": [{"name": LISTENER, "port": port, "targetPort": PROXY_LISTENER_PORT, "protocol": "TCP"}],
    }


def cluster_service(gateway: GatewayPlan) -> Optional[dict[str, Any]]:
    """Beside an NLB, the door of the pods in the cluster (`cluster_endpoint`): a ClusterIP of the program's own
    rather than Envoy Gateway's generated one, which serves the listener's port 8080. None where the proxies'
    Service is a ClusterIP already. No NetworkPolicy selects the proxies: the key is what admits a caller."""
    if not gateway.load_balanced:
        return None
    spec = {**_proxies_spec(CLUSTER_PORT), "type": "ClusterIP"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(CLUSTER_SERVICE, "gateway", GATEWAY_NAMESPACE), "spec": spec}


def gateway_config() -> dict[str, Any]:
    """AI Gateway's settings for the extproc it injects beside each proxy: its requests and limit, which it
    takes from here only (extproc_builder.go, v1.1.0). It parses every request body and answers /v1/models."""
    resources = {"requests": system.EXTPROC.resources(), "limits": {"memory": "1Gi"}}
    return {
        "apiVersion": AI_GATEWAY_API,
        "kind": "GatewayConfig",
        "metadata": _metadata(GATEWAY_NAME, "gateway"),
        "spec": {"extProc": {"kubernetes": {"resources": resources}}},
    }


def gateway_object(gateway: GatewayPlan) -> dict[str, Any]:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": {**_metadata(GATEWAY_NAME, "gateway"), "annotations": {GATEWAY_CONFIG_ANNOTATION: GATEWAY_NAME}},
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "infrastructure": {"parametersRef": {"group": ENVOY_PROXY.group, "kind": ENVOY_PROXY.kind, "name": PROXY_CONFIG}},
            # One HTTP listener: TLS, where there is any, ends at the NLB, which forwards the decrypted stream here.
            "listeners": [
                {"name": LISTENER, "protocol": "HTTP", "port": PROXY_LISTENER_PORT, "allowedRoutes": {"namespaces": {"from": "Same"}}}
            ],
        },
    }


def route_name(route: GatewayRoute) -> str:
    """The model's AIGatewayRoute, and the HTTPRoute AI Gateway generates from it under the same name."""
    return route.model


def backend(route: GatewayRoute) -> dict[str, Any]:
    """Where the model's traffic goes: its Service's cluster name. AI Gateway rewrites Host to it (its
    ai-eg-host-rewrite filter), which is a host the interceptor routes for a model at zero."""
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "Backend",
        "metadata": _metadata(route.model, "route"),
        "spec": {"endpoints": [{"fqdn": {"hostname": route.backend_host, "port": SERVING_PORT}}]},
    }


def ai_service_backend(route: GatewayRoute) -> dict[str, Any]:
    return {
        "apiVersion": AI_GATEWAY_API,
        "kind": "AIServiceBackend",
        "metadata": _metadata(route.model, "route"),
        "spec": {
            # vLLM serves the OpenAI API.
            "schema": {"name": "OpenAI"},
            "backendRef": {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": route.model},
        },
    }


def ai_gateway_route(route: GatewayRoute, plan: Plan) -> dict[str, Any]:
    """One rule: the model's served name in MODEL_HEADER goes to its backend; every response's tokens are
    counted into the metadata the rate limit reads."""
    model = plan.model(route.model)
    return {
        "apiVersion": AI_GATEWAY_ROUTE.api_version,
        "kind": AI_GATEWAY_ROUTE.kind,
        "metadata": _metadata(route_name(route), "route"),
        "spec": {
            "parentRefs": [_gateway_ref()],
            "rules": [
                {
                    "name": "serve",
                    "matches": [{"headers": [{"type": "Exact", "name": MODEL_HEADER, "value": route.served_name}]}],
                    "backendRefs": [{"name": route.model}],
                    # A request that wakes the model waits for its cold start, as the interceptor allows it.
                    "timeouts": {
                        "request": f"{model.cold_start_seconds + 600}s" if route.through_interceptor else REQUEST_TIMEOUT
                    },
                    "modelsOwnedBy": PART_OF,
                }
            ],
            "llmRequestCosts": [
                {"metadataKey": TOKEN_METADATA_KEYS[kind], "type": TOKEN_COST_TYPES[kind]} for kind in TokenKind
            ],
        },
    }


def api_keys_secret_data(clients: list[tuple[str, str]]) -> dict[str, str]:
    """Client name -> its key, without `Bearer `: clients send `Authorization: Bearer <key>`, and Envoy compares
    the key alone (Envoy Gateway's API key task, v1.9)."""
    return dict(clients)


def api_keys_secret_metadata() -> dict[str, Any]:
    return _metadata(GATEWAY_KEYS_SECRET, "gateway")


def _authorization_rules(gateway: GatewayPlan, plan: Plan) -> list[dict[str, Any]]:
    """First match wins: each client to its own models; any other served model is refused (403); what names no
    served model (GET /v1/models, an unknown model) passes on, to the list or to the 404 in OpenAI's shape."""
    rules: list[dict[str, Any]] = [
        {
            "name": f"client-{client.name}",
            "action": "Allow",
            "principal": {
                "headers": [
                    {"name": CLIENT_ID_HEADER, "values": [client.name]},
                    {"name": MODEL_HEADER, "values": list(client.served_names)},
                ]
            },
        }
        for client in gateway.clients
    ]
    rules.append(
        {
            "name": "other-clients-models",
            "action": "Deny",
            "principal": {"headers": [{"name": MODEL_HEADER, "values": [m.served_name for m in plan.models]}]},
        }
    )
    return rules


def _gateway_ref() -> dict[str, str]:
    return {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME}


def _gateway_policy(kind: Kind, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An Envoy Gateway policy on the whole Gateway: every route, the route-not-found ones included."""
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": _metadata(name, "gateway"),
        "spec": {"targetRefs": [_gateway_ref()], **spec},
    }


def security_policy(gateway: GatewayPlan, plan: Plan) -> dict[str, Any]:
    """Every request needs a client's key (401 otherwise), and a model of that client's list (403 otherwise)."""
    return _gateway_policy(
        SECURITY_POLICY,
        "llm-gateway-keys",
        {
            "apiKeyAuth": {
                "credentialRefs": [{"group": "", "kind": "Secret", "name": GATEWAY_KEYS_SECRET}],
                "extractFrom": [{"headers": ["Authorization"]}],
                "forwardClientIDHeader": CLIENT_ID_HEADER,
                # The key goes no further than the gateway: the models never see it.
                "sanitize": True,
            },
            "authorization": {"defaultAction": "Allow", "rules": _authorization_rules(gateway, plan)},
        },
    )


def _token_rule(client: GatewayClient) -> dict[str, Any]:
    """The client's bucket: checked before each request (cost 0), drawn down by the response's token count."""
    return {
        "clientSelectors": [{"headers": [{"name": CLIENT_ID_HEADER, "type": "Exact", "value": client.name}]}],
        "limit": {"requests": client.tokens_per_minute, "unit": "Minute"},
        # One bucket over all the routes the policy reaches, not one per model's route.
        "shared": True,
        "cost": {
            "request": {"from": "Number", "number": 0},
            "response": {
                "from": "Metadata",
                "metadata": {"namespace": COST_METADATA_NAMESPACE, "key": TOKEN_METADATA_KEYS[client.counts]},
            },
        },
    }


def openai_error(message: str, kind: str, code: str) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}, sort_keys=True)


# Envoy's own answers, in OpenAI's error shape, so an OpenAI client raises the matching error: the custom
# response filter is first in Envoy Gateway's order, so it sees the replies of the filters after it. Envoy Gateway
# 1.9's responseOverride matches on the status alone (its CRD has no match on where the reply came from), so a
# model's own reply with one of these codes, such as vLLM's 404 for a model it does not serve, gets the same body.
ERROR_RESPONSES = (
    (401, openai_error("Missing or invalid API key: send Authorization: Bearer <key>.", "invalid_request_error", "invalid_api_key")),
    (403, openai_error("This API key may not use this model.", "invalid_request_error", "model_not_allowed")),
    (
        404,
        openai_error(
            "The model does not exist on this gateway, or the path is not an OpenAI endpoint; GET /v1/models lists the models.",
            "invalid_request_error",
            "model_not_found",
        ),
    ),
    (413, openai_error(f"The request body is larger than the gateway takes ({REQUEST_BODY_LIMIT}).", "invalid_request_error", "request_too_large")),
    (429, openai_error("This API key has used its tokens for this minute; retry later.", "rate_limit_error", "rate_limit_exceeded")),
)


def backend_traffic_policy(gateway: GatewayPlan) -> dict[str, Any]:
    """The token budgets, per client, and OpenAI-shaped errors for the gateway's own refusals."""
    return _gateway_policy(
        BACKEND_TRAFFIC_POLICY,
        "llm-gateway-tokens",
        {
            "rateLimit": {"global": {"rules": [_token_rule(c) for c in gateway.clients]}},
            # The buffer filter that makes AI Gateway's extproc come after the key check (see the module's doc).
            "requestBuffer": {"limit": REQUEST_BODY_LIMIT},
            "responseOverride": [
                {
                    "match": {"statusCodes": [{"type": "Value", "value": status}]},
                    "response": {"contentType": "application/json", "body": {"type": "Inline", "inline": body}},
                }
                for status, body in ERROR_RESPONSES
            ],
        },
    )


def client_traffic_policy() -> dict[str, Any]:
    """TCP keepalives towards the clients, so that the NLB between keeps a silent request's connection open."""
    return _gateway_policy(CLIENT_TRAFFIC_POLICY, "llm-gateway-clients", {"tcpKeepalive": dict(DOWNSTREAM_KEEPALIVE)})


def redis_objects() -> list[dict[str, Any]]:
    """The rate limit's counters: one Redis, hardened, with requests, reachable only from the gateway's namespace."""
    labels = _labels("ratelimit-store")
    selector = {NAME_LABEL: "llm-gateway", COMPONENT_LABEL: "ratelimit-store"}
    container = {
        "name": "redis",
        "image": RATE_LIMIT_REDIS_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        # Counters only: nothing to persist, nothing written to the root filesystem.
        "args": ["--save", "", "--appendonly", "no", "--dir", "/data"],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "resources": {"requests": system.RATE_LIMIT_REDIS.resources(), "limits": {"cpu": "1", "memory": "512Mi"}},
        "readinessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 5},
        "livenessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 20},
        "securityContext": {
            "runAsNonRoot": True,
            # Above the host's UID range; the image's entrypoint runs redis-server as whoever it is started as.
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                **_metadata(REDIS, "ratelimit-store", GATEWAY_NAMESPACE),
                "annotations": {
                    "checkov.io/skip1": "CKV_K8S_43=the upstream Redis image pinned by release tag in vllm_platform/pins.py",
                    "checkov.io/skip2": "CKV_K8S_15=IfNotPresent on a release-tagged image: a restart reuses the node's copy",
                },
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        **system_placement(),
                        "automountServiceAccountToken": False,
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 10001},
                        "containers": [container],
                        "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(REDIS, "ratelimit-store", GATEWAY_NAMESPACE),
            "spec": {"selector": selector, "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(REDIS, "ratelimit-store", GATEWAY_NAMESPACE),
            "spec": {
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": REDIS_PORT, "protocol": "TCP"}]}],
            },
        },
    ]


def proxy_peer() -> dict[str, Any]:
    """The gateway's proxies, as a NetworkPolicy peer of the models'."""
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": GATEWAY_NAMESPACE}},
        "podSelector": {"matchLabels": {OWNING_GATEWAY_LABEL: GATEWAY_NAME}},
    }


def pod_monitor() -> dict[str, Any]:
    """The proxies' Envoy stats (requests, latency, 5xx) and AI Gateway's token and latency metrics per client
    and model, from the extproc beside each proxy."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {**_metadata("llm-gateway", "gateway", GATEWAY_NAMESPACE), "labels": {**_labels("gateway"), **MONITOR_SELECTOR_LABELS}},
        "spec": {
            "selector": {"matchLabels": {OWNING_GATEWAY_LABEL: GATEWAY_NAME}},
            "podMetricsEndpoints": [
                {"port": PROXY_METRICS_PORT, "path": ENVOY_METRICS_PATH},
                {"port": EXTPROC_METRICS_PORT, "path": METRICS_PATH},
            ],
        },
    }


def gateway_namespaces() -> list[dict[str, Any]]:
    """Envoy Gateway and its proxies; AI Gateway's controller; the routes, keys and policies. The Gateway is not
    in Envoy Gateway's own namespace, where AI Gateway v1.1 does not attach its filter (envoyproxy/ai-gateway#1708)."""
    labels = {**MONITOR_SELECTOR_LABELS, "pod-security.kubernetes.io/enforce": "baseline"}
    # The proxies, the NLB's IP targets, get the AWS Load Balancer Controller's readiness gate: a rolling update
    # waits for each new pod to be healthy in the target group before the next old one goes. Inert where the
    # controller is not installed; its pod webhook fails open (podMutatorWebhookConfig.failurePolicy: Ignore).
    proxies = {**labels, READINESS_GATE_LABEL: "enabled"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(proxies if name == GATEWAY_NAMESPACE else labels)}}
        for name in (GATEWAY_NAMESPACE, AI_GATEWAY_NAMESPACE, GATEWAY_ROUTES_NAMESPACE)
    ]


def routed_objects(plan: Plan, docker_hub_registry: Optional[str] = None) -> list[dict[str, Any]]:
    """Everything on the Gateway API side, in the order that lets each find what it refers to."""
    gateway = plan.gateway
    assert gateway is not None
    objects = [gateway_class(), envoy_proxy(gateway, docker_hub_registry), gateway_config(), gateway_object(gateway)]
    for route in gateway.routes:
        objects += [backend(route), ai_service_backend(route), ai_gateway_route(route, plan)]
    return [*objects, security_policy(gateway, plan), backend_traffic_policy(gateway), client_traffic_policy()]
