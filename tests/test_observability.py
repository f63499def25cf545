"""The observability layer: pinned releases, the monitor selection contract, wiring through outputs,
ordering, the dashboard and alert PromQL, scale to zero through the KEDA HTTP add-on, and CRD validity."""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any

import pytest
import yaml

from tests.conftest import COMMITTED_STACKS, document_plan, minimal_document, objects_of, plan_of, render_document, rendered_stack, resources_of
from tools import mocks, schemas
from vllm_platform import pins
from vllm_platform.config.errors import ConfigError
from vllm_platform.contract import MONITOR_SELECTOR_LABELS, MONITORING_NAMESPACE
from vllm_platform.config.loader import stack_config
from vllm_platform.k8s import alerting, alerts, cluster_alerts, dashboards, gateway, monitoring, network
from vllm_platform.plan import notes

RELEASE = "kubernetes:helm.sh/v3:Release"
RELEASE_NAMES = {c.release for c in (pins.KUBE_PROMETHEUS_STACK, pins.KEDA, pins.DCGM_EXPORTER, pins.KEDA_HTTP_ADD_ON)}
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")

# Names current vLLM exports with label model_name (docs/design/metrics.md, vllm/v1/metrics/loggers.py).
CURRENT_VLLM_METRICS = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
    "vllm:request_success_total",
    "vllm:num_preemptions_total",
}
# Removed by the V1 engine or renamed: a dashboard using them shows nothing.
REMOVED_VLLM_METRICS = {
    "vllm:gpu_cache_usage_perc",
    "vllm:cpu_cache_usage_perc",
    "vllm:num_requests_swapped",
    "vllm:avg_prompt_throughput_toks_per_s",
    "vllm:avg_generation_throughput_toks_per_s",
    "vllm:time_per_output_token_seconds",
    "vllm:time_in_queue_requests",
    "vllm:cpu_prefix_cache_hit_rate",
    "vllm:gpu_prefix_cache_hit_rate",
}
# DCGM exporter default counters, the kube-state-metrics series for replicas, KEDA's and Karpenter's errors.
OTHER_METRICS = {
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_XID_ERRORS",
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
    "kube_node_status_capacity",
    "kube_node_status_condition",
    "kube_node_status_allocatable",
    "kube_pod_container_status_waiting_reason",
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_status_ready",
    "keda_scaled_object_errors_total",
    "karpenter_cloudprovider_errors_total",
    "up",
    # vLLM's API server's HTTP answers (prometheus-fastapi-instrumentator's default, without model_name).
    "http_requests_total",
    # Prometheus' own series of its alerts' states, which VllmModelDown reads to hold itself.
    "ALERTS",
}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "and", "or", "unless",
    "rate", "increase", "changes", "histogram_quantile", "group_left", "group_right", "bool",
    "max_over_time", "min_over_time", "last_over_time", "timestamp", "vector", "offset", "absent",
}  # fmt: skip
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Every metric name in a PromQL expression: identifiers left after strings, matchers and ranges go."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    stripped = re.sub(r"\boffset\s+\d+[smhdwy]", "", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", r"\1", stripped)
    names = set()
    for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        if word in PROMQL_WORDS:
            continue
        for suffix in HISTOGRAM_SUFFIXES:
            if word.endswith(suffix) and word.removesuffix(suffix) in CURRENT_VLLM_METRICS | REMOVED_VLLM_METRICS:
                word = word.removesuffix(suffix)
        names.add(word)
    return names


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - CURRENT_VLLM_METRICS - OTHER_METRICS


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: every matchLabels pair and every expression must hold."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for requirement in selector.get("matchExpressions", []):
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values", [])
        holds = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not holds:
            return False
    return True


GRAFANA_PASSWORD = "plain-text-grafana-pw-42"


@lru_cache(maxsize=None)
def _rendered(variant: str) -> Any:
    documents = {
        "two-models": minimal_document(
            models=[
                {"name": "llama-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "gpuPool": "g5", "replicas": {"min": 1, "max": 3}},
                {"name": "llama-8b-chat", "model": "meta-llama/Llama-3.1-8B-Instruct", "servedModelName": "chat",
                 "gpuPool": "g5", "autoscaling": {"mode": "hpa-cpu"}},
            ],
            observability={"timeToFirstTokenSloSeconds": 1.0, "grafanaAdminPassword": {"secure": "AAABAgrafana"}},
        ),
        "external": minimal_document(
            observability={"enabled": False, "externalPrometheusUrl": "http://prometheus.shared.svc:9090"}
        ),
        "no-grafana": minimal_document(observability={"grafanaEnabled": False, "alertmanagerEnabled": False}),
    }  # fmt: skip
    # The engine decrypts a secret before the program reads it: the plain text must still never show.
    return render_document(documents[variant], secrets={"AAABAgrafana": GRAFANA_PASSWORD})


def _release_inputs(rendering: Any, release: str) -> dict[str, Any]:
    (record,) = [r for r in resources_of(rendering, RELEASE) if r.name == release]
    return record.inputs


def _output(rendering: Any) -> dict[str, Any]:
    return rendering.outputs["observability"]


# The add-on only where a model scales to zero (dev); DCGM only where models use GPUs (not local).
EXPECTED_RELEASES = {
    "dev": {"kube-prometheus-stack", "keda", "dcgm-exporter", "keda-add-ons-http"},
    "staging": {"kube-prometheus-stack", "keda", "dcgm-exporter"},
    "prod": {"kube-prometheus-stack", "keda", "dcgm-exporter"},
    "local": {"kube-prometheus-stack", "keda"},
}


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_stack_pins_its_releases(stack: str) -> None:
    rendering = rendered_stack(stack)
    releases = {r.name: r.inputs for r in resources_of(rendering, RELEASE) if r.name in RELEASE_NAMES}
    assert set(releases) == EXPECTED_RELEASES[stack]
    charts = monitoring.installed_charts(rendering.plan)
    assert _output(rendering)["charts"] == {c.release: f"{c.chart} {c.version}" for c in charts}
    assert set(_output(rendering)["charts"]) == EXPECTED_RELEASES[stack]
    for chart in charts:
        inputs = releases[chart.release]
        assert EXACT_VERSION.match(inputs["version"]), inputs["version"]
        assert inputs["name"] == chart.release, "an explicit name keeps service names predictable"
        assert inputs["chart"] == chart.chart
        assert inputs["repositoryOpts"]["repo"].startswith("https://")
        assert inputs["namespace"] == chart.namespace


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_scaled_objects_query_the_observability_output(stack: str) -> None:
    rendering = rendered_stack(stack)
    url = _output(rendering)["prometheusUrl"]
    assert url == monitoring.prometheus_url(pins.KUBE_PROMETHEUS_STACK.release, MONITORING_NAMESPACE)
    scaled = objects_of(rendering, "ScaledObject")
    assert scaled, "every committed stack autoscales with KEDA"
    for manifest in scaled:
        assert [t["metadata"]["serverAddress"] for t in manifest["spec"]["triggers"] if t["type"] == "prometheus"] == [url]


def test_an_external_prometheus_replaces_the_stack() -> None:
    rendering = _rendered("external")
    assert not [r for r in resources_of(rendering, RELEASE) if r.name in RELEASE_NAMES]
    assert not objects_of(rendering, "PrometheusRule")
    assert _output(rendering)["prometheusUrl"] == "http://prometheus.shared.svc:9090"
    (scaled,) = objects_of(rendering, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["serverAddress"] == "http://prometheus.shared.svc:9090"


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_prometheus_selects_the_platform_monitors_and_rules(stack: str) -> None:
    rendering = rendered_stack(stack)
    spec = _release_inputs(rendering, "kube-prometheus-stack")["values"]["prometheus"]["prometheusSpec"]
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in objects_of(rendering, "Namespace")}
    for kind, prefix in (("ServiceMonitor", "serviceMonitor"), ("PrometheusRule", "rule")):
        objects = objects_of(rendering, kind)
        assert objects
        assert spec[f"{prefix}SelectorNilUsesHelmValues"] is False
        for manifest in objects:
            metadata = manifest["metadata"]
            assert selector_matches(spec[f"{prefix}Selector"], metadata.get("labels", {})), metadata["name"]
            assert selector_matches(spec[f"{prefix}NamespaceSelector"], namespaces[metadata["namespace"]]), metadata
    for monitor in objects_of(rendering, "ServiceMonitor"):
        assert monitor["metadata"]["labels"].items() >= MONITOR_SELECTOR_LABELS.items()
    # PodMonitors follow the same namespace contract.
    assert spec["podMonitorNamespaceSelector"] == spec["serviceMonitorNamespaceSelector"]


def test_prometheus_ignores_namespaces_outside_the_platform() -> None:
    selector = monitoring.monitor_selection()["serviceMonitorNamespaceSelector"]
    assert selector_matches(selector, {**MONITOR_SELECTOR_LABELS, "team": "x"})
    assert not selector_matches(selector, {"kubernetes.io/metadata.name": "other-team"})
    assert not selector_matches(selector, {"app.kubernetes.io/part-of": "someone-else"})


@pytest.mark.parametrize("interval, timeout", [("5000ms", "5000ms"), ("7500ms", "7500ms"), ("5s", "5s"), ("10s", "10s"), ("1m", "10s")])
def test_the_dcgm_scrape_timeout_is_a_duration_the_operator_takes_and_within_the_interval(
    interval: str, timeout: str, crd_dir: Any
) -> None:
    """The ServiceMonitor CRD's own duration pattern: a timeout such as 0.5s would make the API server refuse the
    DCGM release's monitor."""
    plan = document_plan(minimal_document(observability={"prometheus": {"scrapeInterval": interval}}))
    written = monitoring.dcgm_exporter_values(plan)["serviceMonitor"]["scrapeTimeout"]
    assert written == timeout
    crd = next(d for d in yaml.safe_load_all((crd_dir / "monitoring.coreos.com_servicemonitors.yaml").read_text()) if d)
    endpoint = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["endpoints"]
    pattern = endpoint["items"]["properties"]["scrapeTimeout"]["pattern"]
    assert re.fullmatch(pattern, written)
    assert not re.fullmatch(pattern, "0.5s"), "the pattern refuses the form the chart values once had"


def test_the_dcgm_monitor_is_selected_and_tolerates_gpu_nodes() -> None:
    values = monitoring.dcgm_exporter_values(rendered_stack("dev").plan)
    monitor_labels = values["serviceMonitor"]["additionalLabels"]
    assert monitor_labels == MONITOR_SELECTOR_LABELS
    namespace = network.platform_namespace(pins.DCGM_EXPORTER.namespace, privileged=True)
    selector = monitoring.monitor_selection()["serviceMonitorNamespaceSelector"]
    assert selector_matches(selector, namespace["metadata"]["labels"])
    assert values["nodeSelector"] == {"node-type": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
    assert values["serviceMonitor"]["honorLabels"] is True, "GPU series keep the namespace and pod they serve"


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_custom_resources_wait_for_the_releases_that_install_their_crds(stack: str) -> None:
    rendering = rendered_stack(stack)
    stack_release, keda_release = f"{RELEASE}::kube-prometheus-stack", f"{RELEASE}::keda"
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for record in resources_of(rendering, f"kubernetes:monitoring.coreos.com/v1:{kind}"):
            assert stack_release in record.dependencies, record.name
    for record in resources_of(rendering, "kubernetes:keda.sh/v1alpha1:ScaledObject"):
        assert keda_release in record.dependencies, record.name
    for dcgm in [r for r in resources_of(rendering, RELEASE) if r.name == "dcgm-exporter"]:
        assert stack_release in dcgm.dependencies, "its ServiceMonitor needs the operator's CRDs"


def test_stack_values_follow_the_config() -> None:
    document = minimal_document(
        observability={"prometheus": {"retention": "30d", "storageSize": "200Gi", "scrapeInterval": "30s"}}
    )
    plan = plan_of({k.removeprefix("vllm-platform:"): v for k, v in document["config"].items() if k.startswith("vllm-platform:")})
    values = monitoring.kube_prometheus_stack_values(plan)
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "30d"
    assert spec["retentionSize"] == "170GB", "85% of the volume, so Prometheus never fills it"
    assert spec["scrapeInterval"] == "30s"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "gp3"
    assert claim["resources"]["requests"]["storage"] == "200Gi"
    assert values["fullnameOverride"] == pins.KUBE_PROMETHEUS_STACK.release


def test_defaults_scrape_every_15_seconds() -> None:
    values = _release_inputs(rendered_stack("dev"), "kube-prometheus-stack")["values"]
    assert values["prometheus"]["prometheusSpec"]["scrapeInterval"] == "15s"
    assert values["alertmanager"]["enabled"] is True
    assert values["grafana"]["enabled"] is True


def _resource_blocks(values: Any, path: str = "") -> dict[str, Any]:
    found = {}
    if isinstance(values, dict):
        for key, value in values.items():
            if key == "resources" and isinstance(value, dict) and "requests" in value:
                found[path or "<root>"] = value
            elif key != "storageSpec":
                found.update(_resource_blocks(value, f"{path}.{key}" if path else key))
    return found


def test_every_component_requests_resources() -> None:
    plan = rendered_stack("dev").plan
    stack = _resource_blocks(monitoring.kube_prometheus_stack_values(plan))
    assert set(stack) >= {
        "prometheusOperator", "prometheusOperator.prometheusConfigReloader", "prometheusOperator.admissionWebhooks.patch",
        "prometheus.prometheusSpec", "alertmanager.alertmanagerSpec", "grafana", "grafana.sidecar",
        "kube-state-metrics", "prometheus-node-exporter",
    }  # fmt: skip
    keda = monitoring.keda_values()["resources"]
    assert set(keda) == {"operator", "metricServer", "webhooks"}
    for block in [*stack.values(), *keda.values(), monitoring.dcgm_exporter_values(plan)["resources"]]:
        assert block["requests"]["cpu"] and block["requests"]["memory"]


def test_grafana_password_from_config_is_a_secret() -> None:
    rendering = _rendered("two-models")
    (secret,) = [s for s in objects_of(rendering, "Secret") if s["metadata"]["name"] == monitoring.GRAFANA_ADMIN_SECRET]
    assert secret["stringData"]["admin-password"] == mocks.SECRET_PLACEHOLDER
    grafana = _release_inputs(rendering, "kube-prometheus-stack")["values"]["grafana"]
    assert grafana["admin"]["existingSecret"] == monitoring.GRAFANA_ADMIN_SECRET
    assert "adminPassword" not in grafana
    everything = json.dumps([rendering.manifests(), rendering.plan_document()])
    assert GRAFANA_PASSWORD not in everything


def test_without_a_password_one_is_generated_as_a_pulumi_secret() -> None:
    rendering = rendered_stack("dev")
    grafana = _release_inputs(rendering, "kube-prometheus-stack")["values"]["grafana"]
    assert "adminPassword" not in grafana, "never the chart's well-known default"
    assert grafana["admin"]["existingSecret"] == monitoring.GRAFANA_ADMIN_SECRET
    (generated,) = resources_of(rendering, "random:index/randomPassword:RandomPassword")
    assert generated.inputs["length"] >= 24
    (secret,) = [s for s in objects_of(rendering, "Secret") if s["metadata"]["name"] == monitoring.GRAFANA_ADMIN_SECRET]
    assert secret["stringData"]["admin-password"] == mocks.SECRET_PLACEHOLDER
    assert mocks.FAKE_GENERATED_PASSWORD not in json.dumps([rendering.manifests(), rendering.plan_document()])
    assert monitoring.GRAFANA_ADMIN_SECRET in _output(rendering)["grafana"]["adminPassword"]


def test_grafana_and_alertmanager_can_be_off() -> None:
    rendering = _rendered("no-grafana")
    values = _release_inputs(rendering, "kube-prometheus-stack")["values"]
    assert values["grafana"]["enabled"] is False
    assert values["alertmanager"]["enabled"] is False
    assert not [c for c in objects_of(rendering, "ConfigMap") if c["metadata"]["name"] == dashboards.DASHBOARD_CONFIGMAP]
    assert "grafana" not in _output(rendering)


def _dashboard_of(rendering: Any) -> dict[str, Any]:
    (config_map,) = [c for c in objects_of(rendering, "ConfigMap") if c["metadata"]["name"] == dashboards.DASHBOARD_CONFIGMAP]
    assert config_map["metadata"]["labels"][dashboards.GRAFANA_DASHBOARD_LABEL] == "1"
    (document,) = config_map["data"].values()
    return json.loads(document)


def _expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_dashboard_has_every_panel_per_model() -> None:
    rendering = _rendered("two-models")
    board = _dashboard_of(rendering)
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["llama-8b (meta-llama/Llama-3.1-8B-Instruct)", "llama-8b-chat (chat)"]
    titles = [p["title"] for p in board["panels"] if p["type"] != "row"]
    assert len(titles) == 2 * len(dashboards.model_panels(rendering.plan.models[0], rendering.plan.config.observability))
    expressions = _expressions(board)
    for needle in (
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket", "histogram_quantile(0.95, sum by (le) (rate(vllm:e2e_request_latency_seconds",
        "vllm:generation_tokens_total", "kube_deployment_spec_replicas", "kube_deployment_status_replicas_available",
        "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED",
    ):  # fmt: skip
        assert any(needle in e for e in expressions), needle
    assert any('model_name="chat"' in e for e in expressions)
    # A pod regex anchored on the hash keeps llama-8b's panels free of llama-8b-chat's GPUs.
    assert not re.fullmatch("llama-8b-[a-z0-9]+-[a-z0-9]+", "llama-8b-chat-5d9c7b6f4-x2x9q")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def any_window(expr: str) -> str:
    return re.sub(r"\[\d+[mh]\]", "[window]", expr)


def test_the_dashboard_shows_the_share_within_the_ttft_slo_as_its_alerts_count_it() -> None:
    """Beside the interpolated p95, the share of requests within the SLO's bucket bound: the very expression
    the SLO alerts compare with the budget, on the configured bound (1.0 s here), in either spelling."""
    rendering = _rendered("two-models")
    board, obs = _dashboard_of(rendering), rendering.plan.config.observability
    (rule,) = objects_of(rendering, "PrometheusRule")
    ttft_alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"].startswith("VllmTimeToFirstToken")]
    panels = [p for p in board["panels"] if p["title"] == "Requests with a first token within 1 s (the SLO)"]
    assert len(panels) == len(rendering.plan.models)
    for model, panel in zip(rendering.plan.models, panels):
        (target,) = panel["targets"]
        assert r'le=~"1(\\.0)?"' in target["expr"] and dashboards.vllm_matcher(model) in target["expr"]
        # The same expression in the alerts, over their burn-rate windows instead of the dashboard's.
        mine = [any_window(r["expr"]) for r in ttft_alerts if r["labels"]["model"] == model.name]
        assert len(mine) == 2 and all(f"(1 - {any_window(target['expr'])})" in expr for expr in mine)
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == "percentunit" and defaults["thresholds"]["steps"][-1]["value"] == obs.latency_objective


def test_dashboard_is_a_well_formed_classic_model() -> None:
    """Grafana's classic dashboard model has a JSON Schema in grafana/grafana-foundation-sdk
    (jsonschema/dashboard.jsonschema.json, generated from grafana/grafana's CUE kinds), on its main branch only
    (f178d5a, 2026-06-02; its version branches end at 11.6, and its PyPI package carries no schema). It is
    another project's file, so it stays out of this repository: the dashboard was validated against it by hand
    (clean), and what it requires is held here, with the structure the sidecar-provisioned Grafana 13 reads."""
    rendering = _rendered("two-models")
    board = _dashboard_of(rendering)
    assert {"uid", "title", "schemaVersion", "panels", "templating", "time", "annotations"} <= set(board)
    assert board["annotations"] == {"list": []}
    assert all({"text", "value"} <= set(v["current"]) for v in board["templating"]["list"])
    variables = {v["name"] for v in board["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"].strip("${}") in variables
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            # A legend names only labels its expression keeps.
            for label in re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]):
                assert re.search(rf"by \([^)]*\b{label}\b", target["expr"]), (panel["title"], label)


def test_every_panel_selects_its_model_as_the_alerts_do() -> None:
    rendering = _rendered("two-models")
    board = _dashboard_of(rendering)
    rows = iter(rendering.plan.models)
    model = None
    for panel in board["panels"]:
        if panel["type"] == "row":
            model = next(rows)
            continue
        assert model is not None
        for target in panel["targets"]:
            expr = target["expr"]
            matchers = [m for m in (dashboards.vllm_matcher(model), dashboards.pod_matcher(model), dashboards.deployment_matcher(model)) if m in expr]
            assert matchers, (panel["title"], expr)


def test_dashboard_and_rules_use_current_metric_names_only() -> None:
    rendering = _rendered("two-models")
    (rule,) = objects_of(rendering, "PrometheusRule")
    expressions = _expressions(_dashboard_of(rendering)) + [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    for expr in expressions:
        assert not unknown_metrics(expr), (expr, unknown_metrics(expr))
        assert "model_name" in expr or "vllm:" not in expr, f"vLLM series are told apart by model_name: {expr}"


@pytest.mark.parametrize(
    "expr",
    [
        'sum(vllm:gpu_cache_usage_perc{model_name="m"})',
        "histogram_quantile(0.9, sum by (le) (rate(vllm:time_per_output_token_seconds_bucket[5m])))",
        "vllm:num_requests_swapped",
        "avg(vllm:avg_generation_throughput_toks_per_s)",
        "DCGM_FI_DEV_MADE_UP",
    ],
)
def test_the_metric_check_catches_removed_or_unknown_names(expr: str) -> None:
    assert unknown_metrics(expr)


MODEL_ALERTS = {
    "VllmModelDown", "VllmModelNotReady", "VllmReplicasUnavailable", "VllmContainerCrashLooping", "VllmMetricsMissing",
    "VllmTimeToFirstTokenBudgetBurning", "VllmTimeToFirstTokenSloBreached", "VllmInterTokenLatencyHigh",
    "VllmRequestLatencyHigh", "VllmRequestErrors", "VllmServerErrors", "VllmRequestsAborted", "VllmPreempting", "VllmKvCacheNearlyFull",
}  # fmt: skip
KEDA_ALERTS = {"VllmQueueBacklogAtMaxReplicas", "KedaScalerErrors"}
GPU_ALERTS = {"NodeWithGpusNotReady", "GpuXidError", "GpuFallenOffBus", "GpuUnavailable"}


def test_rules_carry_summary_runbook_and_both_model_labels() -> None:
    rendering = _rendered("two-models")
    (rule,) = objects_of(rendering, "PrometheusRule")
    groups = {g["name"]: g["rules"] for g in rule["spec"]["groups"]}
    assert set(groups) == {"vllm-llama-8b", "vllm-llama-8b-chat", "gpu-health", "karpenter"}
    assert {r["alert"] for r in groups["vllm-llama-8b"]} == MODEL_ALERTS | KEDA_ALERTS
    assert {r["alert"] for r in groups["vllm-llama-8b-chat"]} == MODEL_ALERTS, "the CPU HPA scales on no queue"
    assert {r["alert"] for r in groups["gpu-health"]} == GPU_ALERTS
    assert {r["alert"] for r in groups["karpenter"]} == {"KarpenterDown", "GpuNodeLaunchesFailing"}
    for model in rendering.plan.models:
        for item in groups[f"vllm-{model.name}"]:
            assert item["labels"] | alerts.model_labels(model) == item["labels"], item["alert"]
            assert item["labels"]["model_name"] == model.served_name
    for item in [r for rules in groups.values() for r in rules]:
        assert item["annotations"]["summary"] and item["annotations"]["runbook"], item["alert"]
        assert item["labels"]["severity"] in ("warning", "critical")
    (slo,) = [r for r in groups["vllm-llama-8b"] if r["alert"] == "VllmTimeToFirstTokenSloBreached"]
    assert r'le=~"1(\\.0)?"' in slo["expr"], "the 1.0 s SLO counts the 1.0 bucket, in either spelling of its bound"
    not_ready = [r for rules in groups.values() for r in rules if r["alert"] == "VllmModelNotReady"]
    assert [r["for"] for r in not_ready] == [alerts.not_ready_for(m) for m in rendering.plan.models]
    (backlog,) = [r for r in groups["vllm-llama-8b"] if r["alert"] == "VllmQueueBacklogAtMaxReplicas"]
    assert "> 30 and on()" in backlog["expr"] and backlog["expr"].endswith(">= 3")


def test_gpu_alerts_are_one_per_gpu_whatever_pod_holds_it() -> None:
    for rule in cluster_alerts.gpu_rules():
        # Every DCGM series is aggregated before it is compared: its `pod` label never reaches the alert.
        bare = re.sub(
            r"(max by \(node, gpu, UUID\)|count by \(node\)) \((changes\()?DCGM_FI_DEV_\w+( unless DCGM_FI_DEV_\w+ offset 10m)?", "", rule["expr"]
        )
        assert "DCGM_FI_DEV_" not in bare, rule["alert"]
    rules = {r["alert"]: r for r in cluster_alerts.gpu_rules()}
    assert rules["GpuFallenOffBus"]["expr"] == f"max by (node, gpu, UUID) (DCGM_FI_DEV_XID_ERRORS) == {cluster_alerts.XID_FALLEN_OFF_BUS}"
    assert rules["GpuFallenOffBus"]["for"] == "1m" and rules["GpuFallenOffBus"]["keep_firing_for"] == "1h"


def _platform(**observability_keys: Any) -> dict[str, Any]:
    document = minimal_document(**observability_keys)
    return {k.removeprefix("vllm-platform:"): v for k, v in document["config"].items() if k.startswith("vllm-platform:")}


def _problems(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        plan_of(raw)
    return str(error.value)


def _one(rendering: Any, kind: str, name: str) -> dict[str, Any]:
    (manifest,) = [m for m in objects_of(rendering, kind) if m["metadata"]["name"] == name]
    return manifest


def test_scale_to_zero_wakes_through_the_http_add_on() -> None:
    rendering = rendered_stack("dev")
    (model,) = rendering.plan.models
    assert model.replicas.min == 0, "dev idles at zero"
    add_on = _release_inputs(rendering, pins.KEDA_HTTP_ADD_ON.release)
    assert EXACT_VERSION.match(add_on["version"]) and add_on["namespace"] == "keda"
    assert add_on["values"]["interceptor"]["proxy"]["port"] == 8000, "the ExternalName entry cannot remap ports"

    entry = _one(rendering, "Service", model.name)
    interceptor = _output(rendering)["interceptorHost"]
    assert interceptor == monitoring.interceptor_host("keda")
    assert entry["spec"] == {
        "type": "ExternalName",
        "externalName": interceptor,
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
    }
    backend = _one(rendering, "Service", f"{model.name}-backend")
    deployment = _one(rendering, "Deployment", model.name)
    assert backend["spec"]["type"] == "ClusterIP"
    assert selector_matches({"matchLabels": backend["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"])

    route = _one(rendering, "InterceptorRoute", model.name)["spec"]
    assert route["target"] == {"service": f"{model.name}-backend", "port": 8000}
    service_host = rendering.outputs["models"][model.name]["serviceUrl"].removeprefix("http://").rsplit(":", 1)[0]
    assert service_host in route["rules"][0]["hosts"] and model.name in route["rules"][0]["hosts"]
    assert route["timeouts"]["readiness"] == f"{model.cold_start_seconds}s"

    scaled = _one(rendering, "ScaledObject", model.name)["spec"]
    assert scaled["minReplicaCount"] == 0 and scaled["cooldownPeriod"] == model.autoscaling.scale_to_zero_after_seconds
    triggers = {t["type"]: t["metadata"] for t in scaled["triggers"]}
    assert triggers["external-push"] == {
        "scalerAddress": monitoring.http_scaler_address("keda"),
        "interceptorRoute": model.name,
    }
    assert "vllm:num_requests_waiting" in triggers["prometheus"]["query"], "queue depth still scales above one"
    assert rendering.outputs["models"][model.name]["scalesToZero"] is True

    allowed = _one(rendering, "NetworkPolicy", "allow-serving-port")["spec"]["ingress"][0]["from"][0]
    assert "keda" in allowed["namespaceSelector"]["matchExpressions"][0]["values"], "the interceptor reaches the pods"


def test_the_route_exists_before_its_scaled_object_and_after_the_add_on() -> None:
    rendering = rendered_stack("dev")
    (scaled,) = resources_of(rendering, "kubernetes:keda.sh/v1alpha1:ScaledObject")
    (route,) = resources_of(rendering, "kubernetes:http.keda.sh/v1beta1:InterceptorRoute")
    assert f"kubernetes:http.keda.sh/v1beta1:InterceptorRoute::{route.name}" in scaled.dependencies
    assert f"{RELEASE}::keda-add-ons-http" in route.dependencies
    add_on = [r for r in resources_of(rendering, RELEASE) if r.name == "keda-add-ons-http"][0]
    assert f"{RELEASE}::keda" in add_on.dependencies, "its interceptor ScaledObject needs KEDA's CRDs"


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_models_that_keep_a_replica_need_no_add_on(stack: str) -> None:
    rendering = rendered_stack(stack)
    assert not [r for r in resources_of(rendering, RELEASE) if r.name == pins.KEDA_HTTP_ADD_ON.release]
    assert not objects_of(rendering, "InterceptorRoute")
    for model in rendering.plan.models:
        assert _one(rendering, "Service", model.name)["spec"]["type"] == "ClusterIP"
        assert [t["type"] for t in _one(rendering, "ScaledObject", model.name)["spec"]["triggers"]] == ["prometheus"]
        assert rendering.outputs["models"][model.name]["scalesToZero"] is False


def test_a_model_at_zero_is_not_alerted_as_not_ready() -> None:
    (rule,) = objects_of(rendered_stack("dev"), "PrometheusRule")
    (not_ready,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "VllmModelNotReady"]
    deployment = 'namespace="inference",deployment="llama-8b"'
    assert not_ready["expr"] == (
        f"max(last_over_time(kube_deployment_status_replicas_available{{{deployment}}}[2m])) < 1 "
        f"and on() max(last_over_time(kube_deployment_spec_replicas{{{deployment}}}[2m])) > 0"
    )


def test_scale_to_zero_needs_the_add_on_that_observability_installs() -> None:
    raw = _platform(observability={"enabled": False, "externalPrometheusUrl": "http://p:9090"})
    raw["models"][0]["replicas"] = {"min": 0, "max": 2}
    message = _problems(raw)
    assert "models[llama-8b].replicas.min: 0 needs the KEDA HTTP add-on" in message and "set min 1" in message


def test_a_model_at_zero_needs_room_for_its_backend_service_name() -> None:
    raw = _platform()
    raw["models"][0].update({"name": "m" * 60, "replicas": {"min": 0, "max": 1}})
    assert f"its pods' Service is {'m' * 60}-backend, longer than 63 characters" in _problems(raw)


def test_disabled_observability_needs_an_external_prometheus_for_keda() -> None:
    message = _problems(_platform(observability={"enabled": False}))
    assert "models[llama-8b].autoscaling" in message and "externalPrometheusUrl" in message
    raw = _platform(observability={"enabled": False})
    raw["models"][0]["autoscaling"] = {"mode": "hpa-cpu"}
    plan_of(raw)


@pytest.mark.parametrize(
    "observability_config, expected",
    [
        ({"externalPrometheusUrl": "http://p:9090"}, "externalPrometheusUrl is for enabled false"),
        ({"enabled": False, "externalPrometheusUrl": "prometheus:9090"}, "is not an http(s) URL"),
        ({"prometheus": {"retention": "15 days"}}, "is not a Prometheus duration"),
        ({"prometheus": {"storageSize": "50G"}}, "is not a volume size"),
        ({"kvCacheUsageAlertRatio": 1.5}, "less than or equal to 1"),
    ],
)
def test_bad_observability_config_is_refused(observability_config: dict[str, Any], expected: str) -> None:
    assert expected in _problems(_platform(observability=observability_config))


@pytest.mark.parametrize("stack", [*COMMITTED_STACKS, "two-models"])
def test_rendered_custom_resources_validate_against_the_crds(stack: str, crd_dir: Any) -> None:
    rendering = _rendered(stack) if stack == "two-models" else rendered_stack(stack)
    custom = [m for m in rendering.manifests() if schemas.is_custom_resource(m)]
    assert {m["kind"] for m in custom} >= {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
    if stack == "dev":
        assert "InterceptorRoute" in {m["kind"] for m in custom}
    assert schemas.validate_manifests(custom, rendering.config.cluster.kubernetes_version, crd_dir) == []


def test_the_crd_check_rejects_a_broken_rule(crd_dir: Any) -> None:
    (rule,) = objects_of(rendered_stack("dev"), "PrometheusRule")
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    broken["spec"]["groups"][0]["rules"][0]["severity"] = "page"
    problems = schemas.validate_manifests([broken], "1.34", crd_dir)
    assert any("for" in p for p in problems) and any("severity" in p for p in problems)


def test_queue_alerts_exist_only_where_the_queue_scales() -> None:
    raw = _platform()
    raw["models"][0]["autoscaling"] = {"mode": "hpa-cpu"}
    plan = plan_of(raw)
    names = {r["alert"] for r in alerts.model_rules(plan.models[0], plan.config.observability)}
    assert names == MODEL_ALERTS


def test_karpenter_is_watched_only_where_the_stack_runs_it() -> None:
    for stack, runs in (("dev", True), ("local", False)):
        rendering = rendered_stack(stack)
        assert rendering.plan.runs_karpenter is runs
        monitors = {m["metadata"]["name"] for m in objects_of(rendering, "ServiceMonitor")}
        (rule,) = objects_of(rendering, "PrometheusRule")
        groups = {g["name"] for g in rule["spec"]["groups"]}
        assert (monitoring.karpenter_service() in monitors, "karpenter" in groups) == (runs, runs), stack


def test_a_stack_without_gpu_models_has_no_gpu_alerts() -> None:
    (rule,) = objects_of(rendered_stack("local"), "PrometheusRule")
    assert "gpu-health" not in [g["name"] for g in rule["spec"]["groups"]]
    (rule,) = objects_of(rendered_stack("prod"), "PrometheusRule")
    assert "gpu-health" in [g["name"] for g in rule["spec"]["groups"]]


def test_only_the_models_clients_reach_the_interceptor() -> None:
    rendering = rendered_stack("dev")
    [policy] = [p for p in objects_of(rendering, "NetworkPolicy") if p["metadata"]["namespace"] == "keda"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "interceptor"
    proxy, admin = policy["spec"]["ingress"]
    # dev has the gateway: its proxies reach the interceptor too, to wake the model at zero.
    [peer, gateway_proxies] = proxy["from"]
    assert gateway_proxies == gateway.proxy_peer()
    callers = peer["namespaceSelector"]["matchExpressions"][0]["values"]
    assert callers == sorted({*rendering.config.client_namespaces, rendering.config.namespace})
    assert proxy["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert admin == {"from": [{"podSelector": {}}], "ports": [{"port": network.INTERCEPTOR_ADMIN_PORT, "protocol": "TCP"}]}
    values = monitoring.http_add_on_values()["interceptor"]
    assert values["proxy"]["port"] == 8000 and values["admin"]["port"] == network.INTERCEPTOR_ADMIN_PORT
    assert not [p for p in objects_of(rendered_stack("prod"), "NetworkPolicy") if p["metadata"]["namespace"] == "keda"]


def test_not_ready_waits_out_a_normal_cold_start() -> None:
    plan = rendered_stack("prod").plan
    for model in plan.models:
        minutes = int(alerts.not_ready_for(model).removesuffix("m"))
        assert minutes >= 15 and minutes * 60 >= model.cold_start_seconds, model.name
    seventy = next(m for m in plan.models if m.tensor_parallel_size == 8)
    assert alerts.not_ready_for(seventy) != "15m", "a 70B takes longer than 15 minutes to come up"


SNS_TOPIC = "arn:aws:sns:us-west-2:123456789012:llm-alerts"


def _routed_document() -> dict[str, Any]:
    return minimal_document(
        observability={
            "alertmanager": {
                "receivers": [
                    {"name": "pager", "pagerduty": {"routingKey": {"secure": "AAABApager"}}},
                    {"name": "topic", "sns": {"topicArn": SNS_TOPIC}},
                ],
                "critical": ["pager", "topic"],
                "warning": ["topic"],
            }
        }
    )


def test_receivers_keys_reach_alertmanager_as_files_of_a_secret_never_as_values() -> None:
    rendering = render_document(_routed_document(), secrets={"AAABApager": "pd-key-never-in-values"})
    values = _release_inputs(rendering, "kube-prometheus-stack")["values"]["alertmanager"]
    assert values["alertmanagerSpec"]["secrets"] == [alerting.RECEIVER_SECRET]
    (pager,) = [r for r in values["config"]["receivers"] if r["name"] == "pager"]
    assert pager["pagerduty_configs"][0]["routing_key_file"] == f"{alerting.SECRETS_DIRECTORY}/pager-routing-key"
    secret = _one(rendering, "Secret", alerting.RECEIVER_SECRET)
    assert secret["stringData"] == {"pager-routing-key": mocks.SECRET_PLACEHOLDER}
    assert "pd-key-never-in-values" not in json.dumps([rendering.manifests(), rendering.plan_document()])
    (release,) = [r for r in resources_of(rendering, RELEASE) if r.name == "kube-prometheus-stack"]
    assert f"kubernetes:core/v1:Secret::{alerting.RECEIVER_SECRET}" in release.dependencies


def test_an_sns_receiver_gets_a_role_that_publishes_to_its_topic_only() -> None:
    rendering = render_document(_routed_document())
    (association,) = [r for r in resources_of(rendering, "aws:eks/podIdentityAssociation") if r.name == "alertmanager-sns"]
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == (
        MONITORING_NAMESPACE, pins.ALERTMANAGER_SERVICE_ACCOUNT,
    )  # fmt: skip
    (policy,) = [r for r in resources_of(rendering, "aws:iam/rolePolicy") if r.name == "alertmanager-sns"]
    assert json.loads(policy.inputs["policy"])["Statement"] == [
        {"Sid": "PublishAlerts", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": [SNS_TOPIC]}
    ]
    values = _release_inputs(rendering, "kube-prometheus-stack")["values"]["alertmanager"]["config"]
    (topic,) = [r for r in values["receivers"] if r["name"] == "topic"]
    assert topic["sns_configs"] == [{"topic_arn": SNS_TOPIC, "sigv4": {"region": "us-west-2"}, "send_resolved": True}]
    # Its pods get Pod Identity credentials only if the association exists before they start: the
    # Observability component, which registers (and so lets its children register) only once it exists.
    (component,) = resources_of(rendering, "vllm-platform:index:Observability")
    assert "aws:eks/podIdentityAssociation:PodIdentityAssociation::alertmanager-sns" in component.dependencies


def test_without_routing_the_preview_warns_that_alerts_go_nowhere() -> None:
    plain = plan_of(_platform()).config
    (note,) = notes.alerting_notes(plain)
    assert note.startswith("observability.alertmanager: not set, so alerts go nowhere")
    off = plan_of(_platform(observability={"alertmanagerEnabled": False})).config
    assert notes.alerting_notes(off)[0].startswith("observability.alertmanagerEnabled: false, so alerts go nowhere")
    routed = stack_config(_routed_document()).platform()
    assert [n.split(":")[0] for n in notes.alerting_notes(routed)] == ["observability.alertmanager.watchdog"]
    # Criticals that page while every warning goes to the null receiver are only half routed.
    document = _routed_document()
    document["config"]["vllm-platform:observability"]["alertmanager"]["warning"] = []
    paged_only = stack_config(document).platform()
    assert notes.alerting_notes(paged_only)[0].startswith("observability.alertmanager.warning: empty, so warnings go nowhere")
