"""The gateway: routing by served name, the 401 and 403 paths, the token limits as rendered, exposure, the
interceptor for a model at zero, and no key anywhere in what the program outputs."""

from __future__ import annotations

import copy
import json
from typing import Any

import pulumi
import pytest

from tests.conftest import ADMIN, minimal_document, objects_of, render_document, rendered_stack, stack_document
from tools import mocks
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.platform import parse_config
from vllm_platform.config.observability import duration_seconds
from vllm_platform.contract import CLIENT_ID_HEADER, GATEWAY_KEYS_SECRET, GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_ROUTES_NAMESPACE, MODEL_HEADER
from vllm_platform.k8s import gateway as manifests
from vllm_platform.plan.plans import Plan
from vllm_platform.plan.resolve import resolve

KEY_A = "a" * 40
KEY_B = "b" * 40
HOST = "llm.example.com"
CERTIFICATE = "arn:aws:acm:us-west-2:123456789012:certificate/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def base(**gateway: Any) -> dict[str, Any]:
    return {
        "cluster": {
            "name": "llm-test",
            "adminPrincipalArns": [ADMIN],
            "gpuNodePools": [{"name": "g5", "instanceTypes": ["g5.2xlarge"], "maxSize": 4}],
        },
        "models": [
            {"name": "llama-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "gpuPool": "g5", "servedModelName": "llama3-8b"},
            {
                "name": "qwen-7b", "model": "Qwen/Qwen2.5-7B-Instruct", "gpuPool": "g5",
                "replicas": {"min": 0, "max": 1}, "autoscaling": {"mode": "keda"},
            },
        ],  # fmt: skip
        "gateway": {
            "enabled": True,
            "clients": [
                {"name": "chat", "apiKey": KEY_A, "models": ["llama-8b", "qwen-7b"], "tokensPerMinute": 1000},
                {"name": "batch", "apiKey": KEY_B, "models": ["llama-8b"], "tokensPerMinute": 50, "counts": "output"},
            ],
            **gateway,
        },
    }


def plan_of(raw: dict[str, Any], secret: bool = True) -> Plan:
    return resolve(parse_config(raw, ("gateway",) if secret else ()))


def problems(raw: dict[str, Any], secret: bool = True) -> list[str]:
    with pytest.raises(ConfigError) as error:
        plan_of(raw, secret)
    return error.value.problems


def test_each_model_has_a_route_on_its_served_name_to_its_service() -> None:
    plan = plan_of(base())
    objects = manifests.routed_objects(plan)
    routes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "AIGatewayRoute"}
    backends = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Backend"}
    assert set(routes) == {"llama-8b", "qwen-7b"}
    [rule] = routes["llama-8b"]["spec"]["rules"]
    assert rule["matches"] == [{"headers": [{"type": "Exact", "name": MODEL_HEADER, "value": "llama3-8b"}]}]
    assert rule["backendRefs"] == [{"name": "llama-8b"}]
    assert backends["llama-8b"]["spec"]["endpoints"] == [{"fqdn": {"hostname": "llama-8b.inference.svc.cluster.local", "port": 8000}}]


def test_a_model_at_zero_is_reached_through_the_interceptor_on_a_host_it_routes() -> None:
    plan = plan_of(base())
    [route] = [r for r in plan.gateway.routes if r.model == "qwen-7b"]  # type: ignore[union-attr]
    assert route.through_interceptor
    qwen = plan.model("qwen-7b")
    from vllm_platform.k8s.autoscaling import route_hosts
    from vllm_platform.k8s.workload import interceptor_entry_service

    # The Backend's host is the model's entry Service, the ExternalName to the interceptor; AI Gateway's host
    # rewrite sends it as Host, one of the hosts the model's InterceptorRoute holds requests for.
    assert route.backend_host == qwen.service_host and route.backend_host in route_hosts(qwen)
    assert interceptor_entry_service(qwen, "interceptor.keda.svc.cluster.local")["spec"]["type"] == "ExternalName"
    # It waits for the model's cold start, not the usual request timeout.
    rule = manifests.ai_gateway_route(route, plan)["spec"]["rules"][0]
    assert int(rule["timeouts"]["request"].removesuffix("s")) > qwen.cold_start_seconds


def test_no_valid_key_is_401_and_a_model_outside_the_list_is_403() -> None:
    plan = plan_of(base())
    policy = manifests.security_policy(plan.gateway, plan)  # type: ignore[arg-type]
    auth = policy["spec"]["apiKeyAuth"]
    assert auth["credentialRefs"] == [{"group": "", "kind": "Secret", "name": GATEWAY_KEYS_SECRET}]
    assert auth["extractFrom"] == [{"headers": ["Authorization"]}] and auth["forwardClientIDHeader"] == CLIENT_ID_HEADER
    assert auth["sanitize"] is True
    rules = policy["spec"]["authorization"]["rules"]
    allowed = {
        r["principal"]["headers"][0]["values"][0]: r["principal"]["headers"][1]["values"] for r in rules if r["action"] == "Allow"
    }
    assert allowed == {"chat": ["llama3-8b", "Qwen/Qwen2.5-7B-Instruct"], "batch": ["llama3-8b"]}
    # After the clients' own: every served model is refused to anyone else, first match wins.
    assert rules[-1]["action"] == "Deny" and rules[-1]["principal"]["headers"] == [
        {"name": MODEL_HEADER, "values": ["llama3-8b", "Qwen/Qwen2.5-7B-Instruct"]}
    ]
    # What names no model (GET /v1/models, an unknown name) passes on to the list or the OpenAI-shaped 404.
    assert policy["spec"]["authorization"]["defaultAction"] == "Allow"
    bodies = {status: json.loads(body) for status, body in manifests.ERROR_RESPONSES}
    assert set(bodies) == {401, 403, 404, 413, 429}
    assert all(set(b["error"]) == {"message", "type", "param", "code"} for b in bodies.values())
    assert bodies[404]["error"]["code"] == "model_not_found"


# Envoy Gateway v1.9.0's filter order (internal/xds/translator/httpfilters.go, newOrderedHTTPFilter) for the
# filters these policies make, and the prefixes AI Gateway v1.1.0 inserts its extproc before, unless a buffer
# filter comes at or after that point (insertAIGatewayExtProcFilter, internal/extensionserver/post_translate_modify.go).
EG_ORDER = {"envoy.filters.http.custom_response": 0, "envoy.filters.http.api_key_auth": 7, "envoy.filters.http.buffer": 12,
            "envoy.filters.http.rbac": 301, "envoy.filters.http.ratelimit": 303, "envoy.filters.http.router": 1000}  # fmt: skip
EXTPROC_BEFORE = ("envoy.filters.http.ext_proc", "envoy.filters.http.rbac", "envoy.filters.http.ratelimit",
                  "envoy.filters.http.custom_response", "envoy.filters.http.router")  # fmt: skip


def listener_filters(plan: Any) -> list[str]:
    """The HTTP filters of the Gateway's listener, in order, with AI Gateway's extproc where it inserts it."""
    security, traffic = manifests.security_policy(plan.gateway, plan)["spec"], manifests.backend_traffic_policy(plan.gateway)["spec"]
    present = ["envoy.filters.http.router"]
    present += ["envoy.filters.http.api_key_auth"] if "apiKeyAuth" in security else []
    present += ["envoy.filters.http.rbac"] if "authorization" in security else []
    present += ["envoy.filters.http.custom_response"] if "responseOverride" in traffic else []
    present += ["envoy.filters.http.ratelimit"] if "rateLimit" in traffic else []
    present += ["envoy.filters.http.buffer"] if "requestBuffer" in traffic else []
    filters = sorted(present, key=EG_ORDER.__getitem__)
    at = next(i for i, f in enumerate(filters) if f.startswith(EXTPROC_BEFORE))
    buffers = [i for i, f in enumerate(filters) if f == "envoy.filters.http.buffer"]
    if buffers and buffers[-1] >= at:
        at = buffers[-1] + 1
    return [*filters[:at], "extproc", *filters[at:]]


def test_the_key_is_checked_before_ai_gateways_extproc_sees_the_request() -> None:
    """The extproc answers GET /v1/models itself and reads the client's name for its metrics: it must run after
    the key check. The custom responses' filter, first of all, would put it first; the request buffer puts it after."""
    plan = plan_of(base())
    order = listener_filters(plan)
    assert order.index("envoy.filters.http.api_key_auth") < order.index("extproc") < order.index("envoy.filters.http.rbac")
    unbuffered = manifests.backend_traffic_policy(plan.gateway)
    del unbuffered["spec"]["requestBuffer"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(manifests, "backend_traffic_policy", lambda gateway: unbuffered)
        assert listener_filters(plan)[0] == "extproc", "without the buffer the extproc would come before the key check"


def test_the_extproc_beside_each_proxy_gets_its_resources_from_the_gateways_config() -> None:
    plan = plan_of(base())
    gateway, config = manifests.gateway_object(plan.gateway), manifests.gateway_config()  # type: ignore[arg-type]
    assert gateway["metadata"]["annotations"][manifests.GATEWAY_CONFIG_ANNOTATION] == config["metadata"]["name"]
    assert config["metadata"]["namespace"] == gateway["metadata"]["namespace"], "AI Gateway looks in the Gateway's namespace"
    assert config["spec"]["extProc"]["kubernetes"]["resources"]["requests"]["cpu"]


def test_each_client_has_a_shared_token_bucket_of_the_tokens_it_counts() -> None:
    plan = plan_of(base())
    policy = manifests.backend_traffic_policy(plan.gateway)  # type: ignore[arg-type]
    rules = {r["clientSelectors"][0]["headers"][0]["value"]: r for r in policy["spec"]["rateLimit"]["global"]["rules"]}
    assert rules["chat"]["limit"] == {"requests": 1000, "unit": "Minute"}
    assert rules["chat"]["cost"]["response"]["metadata"] == {"namespace": "io.envoy.ai_gateway", "key": "llm_total_token"}
    assert rules["batch"]["cost"]["response"]["metadata"]["key"] == "llm_output_token"
    assert all(r["cost"]["request"] == {"from": "Number", "number": 0} and r["shared"] for r in rules.values())
    # Every kind a budget may count is one the routes measure.
    [route, *_] = [o for o in manifests.routed_objects(plan) if o["kind"] == "AIGatewayRoute"]
    assert {c["metadataKey"] for c in route["spec"]["llmRequestCosts"]} == set(manifests.TOKEN_METADATA_KEYS.values())


def test_internet_exposure_needs_tls_and_an_allowlist() -> None:
    [refused] = problems(base(exposure="internet", allowedSourceCidrs=["203.0.113.0/24"]))
    assert "gateway" in refused and "tls.certificateArn" in refused
    [refused] = problems(base(exposure="internet", hostname=HOST, tls={"certificateArn": CERTIFICATE}))
    assert "allowedSourceCidrs" in refused
    [refused] = problems(base(exposure="internet", hostname=HOST, tls={"certificateArn": CERTIFICATE}, allowedSourceCidrs=["0.0.0.0/0"]))
    assert "whole internet" in refused
    plan = plan_of(base(exposure="internet", hostname=HOST, tls={"certificateArn": CERTIFICATE}, allowedSourceCidrs=["203.0.113.0/24"]))
    service = manifests.proxy_service(plan.gateway)  # type: ignore[arg-type]
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert service["spec"]["ports"][0]["port"] == 443
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"] == CERTIFICATE


def test_tls_needs_the_hostname_its_certificate_names_and_a_load_balancer() -> None:
    """Without a hostname the endpoint would be the NLB's *.elb.amazonaws.com name, which no ACM certificate names."""
    [refused] = problems(base(tls={"certificateArn": CERTIFICATE}))
    assert "gateway" in refused and "tls needs hostname" in refused
    [refused] = problems(base(exposure="cluster", hostname=HOST, tls={"certificateArn": CERTIFICATE}))
    assert "exposure cluster" in refused
    plan = plan_of(base(hostname=HOST, tls={"certificateArn": CERTIFICATE}))
    assert manifests.endpoint(plan.gateway, "k8s-envoy-0123.elb.us-west-2.amazonaws.com") == f"https://{HOST}/v1"  # type: ignore[arg-type]


def test_envoy_keeps_silent_connections_open_through_the_nlb_and_its_proxies_wait_for_target_health() -> None:
    """An NLB drops a flow silent for 350 s; a non-streamed generation or a wake from zero can be longer."""
    plan = plan_of(base())
    [policy] = [o for o in manifests.routed_objects(plan) if o["kind"] == "ClientTrafficPolicy"]
    assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME}]
    keepalive = policy["spec"]["tcpKeepalive"]
    assert duration_seconds(keepalive["idleTime"]) < 350 and duration_seconds(keepalive["interval"]) < 350
    labels = {n["metadata"]["name"]: n["metadata"]["labels"] for n in manifests.gateway_namespaces()}
    assert labels[GATEWAY_NAMESPACE][manifests.READINESS_GATE_LABEL] == "enabled", "the proxies are the NLB's targets"
    assert manifests.READINESS_GATE_LABEL not in labels[GATEWAY_ROUTES_NAMESPACE]


def test_the_gateway_comes_after_what_its_proxies_are_made_from() -> None:
    """Envoy Gateway reads the class and the EnvoyProxy, and AI Gateway's webhook the GatewayConfig, as each proxy
    pod is made: were the Gateway first, its first proxies could start without them."""
    rendering = rendered_stack("dev")
    by_kind = {r.type.rsplit(":", 1)[1]: r for r in rendering.resources if r.type.startswith("kubernetes:") and "gateway" in r.type}
    made_from = {m["kind"]: m["metadata"]["name"] for m in rendering.manifests() if m["kind"] in ("GatewayClass", "EnvoyProxy", "GatewayConfig")}
    assert set(made_from) == {"GatewayClass", "EnvoyProxy", "GatewayConfig"}
    needed = {f"{by_kind[kind].type}::{by_kind[kind].name}" for kind in made_from}
    assert needed <= set(by_kind["Gateway"].dependencies)
    for route in (r for r in rendering.resources if r.type.endswith(":AIGatewayRoute")):
        assert not needed & set(route.dependencies), "only the Gateway waits; the routes are made beside it"


def test_both_doors_come_after_the_gateway_whose_proxies_back_them_and_wait_long_enough_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """pulumi-kubernetes waits on a new Service while an endpoint is unready: made after the Gateway, the wait is the
    proxies' (and the NLB's health checks, for a proxy with the readiness gate), given 20 minutes, not its 10."""
    timeouts: dict[str, str] = {}
    register = mocks.RecordingMonitor.RegisterResource

    def recording(self: mocks.RecordingMonitor, request: Any) -> Any:
        timeouts[request.name] = request.customTimeouts.create
        return register(self, request)

    monkeypatch.setattr(mocks.RecordingMonitor, "RegisterResource", recording)
    rendering = render_document(stack_document("dev"), "dev")
    services = {r.name: r for r in rendering.resources if r.type == "kubernetes:core/v1:Service"}
    for name in ("llm-gateway-service", "llm-gateway-cluster-service"):
        assert f"kubernetes:gateway.networking.k8s.io/v1:Gateway::{GATEWAY_NAME}-gateway" in services[name].dependencies
        assert timeouts[name] == "20m"
    assert "kubernetes:helm.sh/v3:Release::aws-load-balancer-controller" in services["llm-gateway-service"].dependencies
    assert timeouts["llm-gateway-gateway"] == "", "the other resources keep the provider's own"


def test_exposure_is_internal_by_default_and_cluster_needs_no_load_balancer() -> None:
    plan = plan_of(base())
    service = manifests.proxy_service(plan.gateway)  # type: ignore[arg-type]
    assert service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    cluster = manifests.proxy_service(plan_of(base(exposure="cluster")).gateway)  # type: ignore[arg-type]
    assert cluster["spec"]["type"] == "ClusterIP" and "annotations" not in cluster["metadata"]


def test_a_plaintext_key_is_refused_and_an_encrypted_one_accepted() -> None:
    leaks = problems(base(), secret=False)
    assert [leak.split(":")[0] for leak in leaks] == ["gateway.clients[0].apiKey", "gateway.clients[1].apiKey"]
    assert all("is a secret written in plain text" in leak and KEY_A not in leak for leak in leaks)
    assert plan_of(base()).gateway is not None


def test_keys_must_be_long_distinct_and_for_known_models() -> None:
    raw = base()
    raw["gateway"]["clients"][1]["apiKey"] = "short"
    [short] = problems(raw)
    assert "32 to 256" in short and "short" not in short
    raw["gateway"]["clients"][1]["apiKey"] = KEY_A
    assert problems(raw) == ["gateway.clients: two clients share an apiKey; the gateway could not tell them apart"]
    raw = base()
    raw["gateway"]["clients"][1]["models"] = ["llama-70b"]
    [unknown] = problems(raw)
    assert unknown.startswith("gateway.clients[batch].models: 'llama-70b' is not in models")
    enabled_without_clients = copy.deepcopy(base())
    enabled_without_clients["gateway"]["clients"] = []
    assert problems(enabled_without_clients)[0].startswith("gateway.clients:")


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_renders_the_gateway_with_no_key_in_any_output(stack: str) -> None:
    rendering = rendered_stack(stack)
    kinds = {o["kind"] for o in rendering.manifests()}
    assert {"Gateway", "GatewayClass", "EnvoyProxy", "AIGatewayRoute", "AIServiceBackend", "Backend", "SecurityPolicy"} <= kinds
    routes = {o["metadata"]["name"] for o in objects_of(rendering, "AIGatewayRoute")}
    assert routes == {m.name for m in rendering.plan.models}
    [keys] = [s for s in objects_of(rendering, "Secret") if s["metadata"]["name"] == GATEWAY_KEYS_SECRET]
    assert set(keys["stringData"]) == {c.name for c in rendering.config.gateway.clients}
    assert set(keys["stringData"].values()) == {mocks.SECRET_PLACEHOLDER}
    # The models admit the gateway's proxies.
    [serving] = [p for p in objects_of(rendering, "NetworkPolicy") if p["metadata"]["name"] == "allow-serving-port"]
    assert manifests.proxy_peer() in serving["spec"]["ingress"][0]["from"]


def test_prod_has_two_clients_and_only_the_gateway_as_a_door() -> None:
    rendering = rendered_stack("prod")
    clients = rendering.config.gateway.clients
    assert len(clients) == 2 and clients[0].models != clients[1].models
    assert clients[0].tokens_per_minute != clients[1].tokens_per_minute
    [serving] = [p for p in objects_of(rendering, "NetworkPolicy") if p["metadata"]["name"] == "allow-serving-port"]
    namespaces = serving["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert "apps" not in namespaces, "directAccess false: the apps namespace calls through the gateway"


def test_no_api_key_reaches_an_output_or_a_resource_in_plain_text() -> None:
    raw = base()
    plan = plan_of(raw)
    keys = [c.api_key for c in plan.config.gateway.clients]
    manifests_text = json.dumps(manifests.routed_objects(plan)) + json.dumps([*manifests.redis_objects(), manifests.proxy_service(plan.gateway)])  # type: ignore[arg-type]
    assert not [k for k in keys if k in manifests_text]
    assert KEY_A not in repr(plan.config)


def test_a_decrypted_key_reaches_its_secret_as_a_secret_and_no_output_resource_or_chart() -> None:
    """The whole program under mocks, with the key decrypted as the engine would: it is in the keys Secret,
    masked as a Pulumi secret, and nowhere in plain text: not in the outputs, any resource (the Helm releases'
    values among them) or the plan."""
    document = minimal_document()
    model = document["config"]["vllm-platform:models"][0]["name"]
    clients = [{"name": "web", "apiKey": {"secure": "AAABAwebKey"}, "models": [model], "tokensPerMinute": 1000}]
    document["config"]["vllm-platform:gateway"] = {"enabled": True, "clients": clients}
    plain = "sk-web-" + "7f3a" * 10
    rendering = render_document(document, "keys", secrets={"AAABAwebKey": plain})
    (keys,) = [r for r in rendering.resources if r.type == "kubernetes:core/v1:Secret" and r.name == GATEWAY_KEYS_SECRET]
    assert keys.inputs["stringData"] == {"web": "[secret]"}
    everything = [rendering.outputs, [r.inputs for r in rendering.resources], rendering.plan_document()]
    assert plain not in json.dumps(everything, default=str)


def test_the_dashboard_has_a_row_per_client_and_the_gateway_is_scraped_on_both_its_ports() -> None:
    """Envoy's stats on the proxy's `metrics` port (Envoy Gateway v1.9.0, proxy/resource.go) and AI Gateway's
    token and latency metrics on the extproc's `aigw-admin` (v1.1.0, extproc_builder.go)."""
    rendering = rendered_stack("prod")
    (board,) = [c for c in objects_of(rendering, "ConfigMap") if c["metadata"]["name"].endswith("dashboard")]
    panels = json.loads(next(iter(board["data"].values())))["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    clients = rendering.config.gateway.clients
    assert [r for r in rows if r.startswith("Gateway client ")] == [f"Gateway client {c.name}" for c in clients]
    queries = [t["expr"] for p in panels if p["type"] != "row" for t in p.get("targets", [])]
    assert all(any(f'client_id="{c.name}"' in q for q in queries) for c in clients)
    (monitor,) = objects_of(rendering, "PodMonitor")
    ports = {(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]}
    assert ports == {("metrics", "/stats/prometheus"), ("aigw-admin", "/metrics")}


def test_the_load_balancer_controller_may_change_only_this_clusters_load_balancers() -> None:
    """Its published v3.5.0 policy scopes what it creates, tags and deletes by the `elbv2.k8s.aws/cluster` tag's
    presence (`Null: false`); here every such condition asks that the tag name this cluster."""
    rendering = rendered_stack("prod")
    (policy,) = [r for r in rendering.resources if r.type == "aws:iam/rolePolicy:RolePolicy" and r.name == "aws-load-balancer-controller"]
    statements = json.loads(policy.inputs["policy"])["Statement"]
    tag = "elbv2.k8s.aws/cluster"
    tests = [(op, key, value) for s in statements for op, test in s.get("Condition", {}).items() for key, value in test.items() if tag in key]
    assert len({key for _, key, _ in tests}) == 2, "both the request's tag and the resource's"
    # Only one absence check stays: a tag change that leaves the cluster tag alone.
    assert all((op, value) == ("StringEquals", rendering.config.cluster.name) or (op, value) == ("Null", "true") for op, key, value in tests)
    assert sum(op == "StringEquals" for op, _, _ in tests) >= 6


def prod_gateway_config() -> dict[str, Any]:
    return stack_document("prod")["config"]["vllm-platform:gateway"]


def test_prods_rendered_token_limits_are_its_clients_budgets_of_the_tokens_each_counts() -> None:
    """Pulumi.prod.yaml's gateway.clients, as the rendered BackendTrafficPolicy holds them: per client its
    tokens per minute, drawn down by the token kind it counts (`total` where it names none)."""
    configured = {c["name"]: (c["tokensPerMinute"], c.get("counts", "total")) for c in prod_gateway_config()["clients"]}
    assert configured == {"chat-app": (2_000_000, "total"), "batch-summaries": (300_000, "output")}
    [policy] = objects_of(rendered_stack("prod"), "BackendTrafficPolicy")
    assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME}]
    rendered = {
        r["clientSelectors"][0]["headers"][0]["value"]: (r["limit"], r["cost"]["response"]["metadata"], r["cost"]["request"], r["shared"])
        for r in policy["spec"]["rateLimit"]["global"]["rules"]
    }
    assert [s["headers"][0]["name"] for r in policy["spec"]["rateLimit"]["global"]["rules"] for s in r["clientSelectors"]] == [CLIENT_ID_HEADER] * 2
    assert rendered == {
        "chat-app": ({"requests": 2_000_000, "unit": "Minute"}, {"namespace": "io.envoy.ai_gateway", "key": "llm_total_token"}, {"from": "Number", "number": 0}, True),
        "batch-summaries": ({"requests": 300_000, "unit": "Minute"}, {"namespace": "io.envoy.ai_gateway", "key": "llm_output_token"}, {"from": "Number", "number": 0}, True),
    }


def authorization(rules: list[dict[str, Any]], default: str, headers: dict[str, str]) -> str:
    """Envoy Gateway's authorization as the rendered rules say: the first rule whose every header matches one of
    its values decides, else the default."""
    for rule in rules:
        if all(headers.get(h["name"]) in h["values"] for h in rule["principal"]["headers"]):
            return rule["action"]
    return default


def test_prods_rendered_keys_and_model_rules_allow_each_client_its_own_models_only() -> None:
    """Per client and model of Pulumi.prod.yaml, the rendered SecurityPolicy's decision: a key is required (401
    without), each client's models are allowed, every other served model is denied (403), and a name that is no
    model passes on to AI Gateway's OpenAI-shaped 404."""
    rendering = rendered_stack("prod")
    served = {m.name: m.served_name for m in rendering.plan.models}
    assert served == {"llama-8b": "meta-llama/Llama-3.1-8B-Instruct", "llama-70b": "meta-llama/Llama-3.3-70B-Instruct"}
    clients = {c["name"]: c["models"] for c in prod_gateway_config()["clients"]}
    assert clients == {"chat-app": ["llama-8b", "llama-70b"], "batch-summaries": ["llama-8b"]}
    [policy] = objects_of(rendering, "SecurityPolicy")
    auth = policy["spec"]["apiKeyAuth"]
    assert auth["credentialRefs"] == [{"group": "", "kind": "Secret", "name": GATEWAY_KEYS_SECRET}]
    assert auth["forwardClientIDHeader"] == CLIENT_ID_HEADER and auth["sanitize"] is True
    [traffic] = objects_of(rendering, "BackendTrafficPolicy")
    codes = {o["match"]["statusCodes"][0]["value"]: json.loads(o["response"]["body"]["inline"])["error"]["code"] for o in traffic["spec"]["responseOverride"]}
    assert (codes[401], codes[403], codes[404]) == ("invalid_api_key", "model_not_allowed", "model_not_found")
    rules, default = policy["spec"]["authorization"]["rules"], policy["spec"]["authorization"]["defaultAction"]
    decisions = {
        (client, model): authorization(rules, default, {CLIENT_ID_HEADER: client, MODEL_HEADER: name})
        for client in clients
        for model, name in served.items()
    }
    assert decisions == {
        ("chat-app", "llama-8b"): "Allow", ("chat-app", "llama-70b"): "Allow",
        ("batch-summaries", "llama-8b"): "Allow", ("batch-summaries", "llama-70b"): "Deny",
    }  # fmt: skip
    assert authorization(rules, default, {CLIENT_ID_HEADER: "batch-summaries", MODEL_HEADER: "gpt-4o"}) == "Allow"


def test_pods_in_the_cluster_have_a_door_of_their_own_beside_prods_internet_nlb() -> None:
    """prod's NLB admits only its allowlist, which the pods' NAT addresses are not on: they call
    `inClusterEndpoint`, a ClusterIP on port 80 onto the same proxies, and nothing stands between them."""
    rendering = rendered_stack("prod")
    services = {s["metadata"]["name"]: s for s in objects_of(rendering, "Service") if s["metadata"]["namespace"] == GATEWAY_NAMESPACE}
    nlb, inside = services[manifests.proxy_service_name()], services[manifests.CLUSTER_SERVICE]
    assert nlb["spec"]["type"] == "LoadBalancer" and nlb["spec"]["ports"][0]["port"] == 443
    assert inside["spec"]["type"] == "ClusterIP" and "annotations" not in inside["metadata"]
    assert inside["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": manifests.PROXY_LISTENER_PORT, "protocol": "TCP"}]
    assert inside["spec"]["selector"] == nlb["spec"]["selector"], "the same proxies"
    assert rendering.outputs["inClusterEndpoint"] == f"http://{manifests.CLUSTER_SERVICE}.{GATEWAY_NAMESPACE}.svc.cluster.local/v1"
    assert rendering.outputs["endpoint"] == f"https://{HOST}/v1"
    # The proxies carry the Gateway's label, which no NetworkPolicy of their namespace selects: the apps'
    # pods reach them (the key admits or refuses them); the models admit the proxies.
    proxy_labels = {manifests.OWNING_GATEWAY_LABEL: GATEWAY_NAME, manifests.OWNING_GATEWAY_NAMESPACE_LABEL: GATEWAY_ROUTES_NAMESPACE}
    assert inside["spec"]["selector"] == proxy_labels
    policies = [p for p in objects_of(rendering, "NetworkPolicy") if p["metadata"]["namespace"] == GATEWAY_NAMESPACE]
    assert policies and all(
        not p["spec"]["podSelector"] or not set(p["spec"]["podSelector"]["matchLabels"].items()) <= set(proxy_labels.items()) for p in policies
    )
    assert all("matchExpressions" not in p["spec"]["podSelector"] for p in policies)
    [serving] = [p for p in objects_of(rendering, "NetworkPolicy") if p["metadata"]["name"] == "allow-serving-port"]
    assert manifests.proxy_peer() in serving["spec"]["ingress"][0]["from"]


def test_with_exposure_cluster_the_in_cluster_door_is_the_endpoint_itself() -> None:
    gateway = plan_of(base(exposure="cluster")).gateway
    assert gateway is not None and manifests.cluster_service(gateway) is None
    host = f"{GATEWAY_NAME}.{GATEWAY_NAMESPACE}.svc.cluster.local"
    assert manifests.cluster_endpoint(gateway) == manifests.endpoint(gateway, "") == f"http://{host}/v1"
    internal = plan_of(base()).gateway
    assert internal is not None and manifests.cluster_service(internal) is not None
    assert manifests.cluster_endpoint(internal) == f"http://{manifests.CLUSTER_SERVICE}.{GATEWAY_NAMESPACE}.svc.cluster.local/v1"


def test_a_certificate_of_another_region_stops_the_preview_and_one_of_the_stacks_passes() -> None:
    """An NLB serves only an ACM certificate of its own region: prod with its certificate moved to eu-west-1,
    one key changed, stops; prod as committed (us-west-2, as its aws:region) renders."""
    document = stack_document("prod")
    assert document["config"]["aws:region"] == "us-west-2"
    arn = document["config"]["vllm-platform:gateway"]["tls"]["certificateArn"]
    assert ":us-west-2:" in arn and rendered_stack("prod").outputs["endpoint"] == f"https://{HOST}/v1"
    document["config"]["vllm-platform:gateway"]["tls"]["certificateArn"] = arn.replace(":us-west-2:", ":eu-west-1:")
    expected = (
        "gateway.tls.certificateArn: the certificate is in eu-west-1 (partition aws), but the stack deploys to "
        "us-west-2 (partition aws); an NLB serves only an ACM certificate of its own region: request or import one in us-west-2"
    )
    with pytest.raises(pulumi.RunError) as error:
        render_document(document, "prod")
    assert str(error.value) == expected


@pytest.mark.parametrize(
    "arn, refused",
    [
        ("arn:aws-cn:acm:cn-north-1:123456789012:certificate/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", False),
        ("arn:aws:acm:cn-north-1:123456789012:certificate/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", True),
    ],
    ids=["its-partition", "another-partition"],
)
def test_a_certificate_of_another_partition_is_refused(arn: str, refused: bool) -> None:
    gateway = plan_of(base(hostname=HOST, tls={"certificateArn": arn})).config.gateway
    problem = gateway.certificate_problem("aws-cn", "cn-north-1")
    assert problem == (
        "gateway.tls.certificateArn: the certificate is in cn-north-1 (partition aws), but the stack deploys to "
        "cn-north-1 (partition aws-cn); an NLB serves only an ACM certificate of its own region: request or import one in cn-north-1"
        if refused
        else None
    )
