"""Pure builders of the vLLM Grafana dashboard: one row of panels per configured model.

Metric names are those of current vLLM (label `model_name`), kube-state-metrics and NVIDIA's DCGM
exporter; tests/test_observability.py checks every expression against an allow-list and a list of
names vLLM has removed.
"""

from __future__ import annotations

import json
import math
from typing import Any

from vllm_platform.config.gateway import TokenKind
from vllm_platform.config.observability import Observability
from vllm_platform.contract import MONITOR_SELECTOR_LABELS, vllm_metrics
from vllm_platform.k8s.autoscaling import queue_depth_query
from vllm_platform.plan.plans import GatewayClient, ModelPlan, Plan

DASHBOARD_UID = "vllm-platform-models"
DASHBOARD_CONFIGMAP = "vllm-platform-dashboard"
# The kube-prometheus-stack Grafana sidecar loads every ConfigMap carrying this label and value.
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
GRAFANA_DASHBOARD_LABEL_VALUE = "1"
RATE_WINDOW = "5m"
PANEL_WIDTH = 8
PANEL_HEIGHT = 8
PANELS_PER_ROW = 24 // PANEL_WIDTH
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The data source kube-prometheus-stack provisions (its values grafana.sidecar.datasources.name and .uid, left
# as they are), the variable's first choice: a variable's current option has a text and a value.
STACK_DATASOURCE = {"text": "Prometheus", "value": "prometheus"}


def vllm_matcher(model: ModelPlan) -> str:
    """Label matchers for one model's vLLM series: the namespace Prometheus scraped and the served name."""
    return f'namespace="{model.namespace}",{vllm_metrics.MODEL_LABEL}="{model.served_name}"'


def deployment_matcher(model: ModelPlan) -> str:
    return f'namespace="{model.namespace}",deployment="{model.name}"'


def pod_matcher(model: ModelPlan) -> str:
    """The model's pods, `<deployment>-<replicaset hash>-<pod hash>`, and no other Deployment sharing its prefix."""
    return f'namespace="{model.namespace}",pod=~"{model.name}-[a-z0-9]+-[a-z0-9]+"'


def latency_quantile(quantile: float, histogram: str, matcher: str, by: str = "le") -> str:
    return (
        f"histogram_quantile({quantile}, sum by ({by}) "
        f"(rate({histogram}_bucket{{{matcher}}}[{RATE_WINDOW}])))"
    )


def within_share(histogram: str, bound: float, matcher: str, window: str = RATE_WINDOW) -> str:
    """The share of observations within `bound` over the window, read off the bucket at that bound: exact,
    where a quantile between two bounds is interpolated (1.2 s under buckets of 1.0 and 2.5 s reads as a p95
    of 2.4 s). The latency alerts (k8s/alerts.py) compare its complement with the error budget."""
    within = f"sum(rate({histogram}_bucket{{{matcher},{vllm_metrics.bucket_matcher(bound)}}}[{window}]))"
    return f"{within} / sum(rate({histogram}_count{{{matcher}}}[{window}]))"


def _panel(title: str, unit: str, targets: list[tuple[str, str]], **options: Any) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, **options}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _latency_panel(title: str, histogram: str, matcher: str) -> dict[str, Any]:
    """A latency histogram's p50 and p95, in seconds."""
    return _panel(title, "s", [(latency_quantile(q, histogram, matcher), f"p{q * 100:g}") for q in (0.5, 0.95)])


def model_panels(model: ModelPlan, obs: Observability) -> list[dict[str, Any]]:
    vllm, pods = vllm_matcher(model), pod_matcher(model)
    ttft = obs.time_to_first_token_slo_seconds
    deployment = deployment_matcher(model)
    return [
        _panel(
            "Requests running / waiting",
            "short",
            [
                (f"sum({vllm_metrics.RUNNING}{{{vllm}}})", "running"),
                (queue_depth_query(model), "waiting"),
            ],
        ),
        _panel(
            "KV-cache usage",
            "percentunit",
            [(f"max by (pod) ({vllm_metrics.KV_CACHE_USAGE}{{{vllm}}})", "{{pod}}")],
            min=0,
            max=1,
        ),
        _latency_panel("Time to first token", vllm_metrics.TIME_TO_FIRST_TOKEN, vllm),
        _panel(
            # What the SLO alerts count, against the objective as a threshold line: the quantiles beside it are
            # interpolated between vLLM's buckets and overstate a latency that sits between two bounds.
            f"Requests with a first token within {ttft:g} s (the SLO)",
            "percentunit",
            [(within_share(vllm_metrics.TIME_TO_FIRST_TOKEN, ttft, vllm), f"within {ttft:g} s")],
            min=0,
            max=1,
            thresholds={
                "mode": "absolute",
                "steps": [{"color": "red", "value": None}, {"color": "green", "value": obs.latency_objective}],
            },
            custom={"thresholdsStyle": {"mode": "line"}},
        ),
        _latency_panel("Inter-token latency", vllm_metrics.INTER_TOKEN_LATENCY, vllm),
        _panel(
            "End-to-end request latency p95",
            "s",
            [(latency_quantile(0.95, vllm_metrics.END_TO_END_LATENCY, vllm), "p95")],
        ),
        _panel(
            "Generation tokens / s",
            "short",
            [(f"sum(rate({vllm_metrics.GENERATION_TOKENS}{{{vllm}}}[{RATE_WINDOW}]))", "tokens/s")],
        ),
        _panel(
            "Replicas desired / ready",
            "short",
            [
                (f"sum(kube_deployment_spec_replicas{{{deployment}}})", "desired"),
                (f"sum(kube_deployment_status_replicas_available{{{deployment}}})", "ready"),
            ],
        ),
        _panel(
            "GPU utilisation",
            "percent",
            [(f"avg by (pod, gpu) (DCGM_FI_DEV_GPU_UTIL{{{pods}}})", "{{pod}} gpu {{gpu}}")],
            min=0,
            max=100,
        ),
        _panel(
            "GPU memory used",
            "percentunit",
            [
                (
                    f"sum by (pod) (DCGM_FI_DEV_FB_USED{{{pods}}}) / "
                    f"(sum by (pod) (DCGM_FI_DEV_FB_USED{{{pods}}}) + sum by (pod) (DCGM_FI_DEV_FB_FREE{{{pods}}}))",
                    "{{pod}}",
                )
            ],
            min=0,
            max=1,
        ),
    ]


# AI Gateway's metrics (gen_ai.* in OpenTelemetry's names, as its extproc exports them), each labelled with the
# client (`client_id`, from the forwarded client header) and the model the request named.
TOKEN_USAGE = "gen_ai_client_token_usage_sum"
GATEWAY_REQUEST_DURATION = "gen_ai_server_request_duration_seconds"


def client_tokens_per_minute(client: GatewayClient) -> str:
    """The client's tokens per minute as its budget counts them: input, output, or both (total)."""
    types = "input|output" if client.counts is TokenKind.TOTAL else client.counts
    return f'sum(rate({TOKEN_USAGE}{{client_id="{client.name}",gen_ai_token_type=~"{types}"}}[{RATE_WINDOW}])) * 60'


def client_panels(client: GatewayClient) -> list[dict[str, Any]]:
    """One gateway client: its tokens against its budget and by model, its requests, errors and latency by model."""
    matcher = f'client_id="{client.name}"'
    by_model = "sum by (gen_ai_request_model)"
    return [
        _panel(
            f"Tokens per minute ({client.counts}) of {client.tokens_per_minute}",
            "short",
            [(client_tokens_per_minute(client), "used"), (str(client.tokens_per_minute), "budget")],
        ),
        _panel(
            "Tokens per minute by model",
            "short",
            [(f"{by_model} (rate({TOKEN_USAGE}{{{matcher}}}[{RATE_WINDOW}])) * 60", "{{gen_ai_request_model}}")],
        ),
        _panel(
            "Requests per second by model",
            "reqps",
            [(f"{by_model} (rate({GATEWAY_REQUEST_DURATION}_count{{{matcher}}}[{RATE_WINDOW}]))", "{{gen_ai_request_model}}")],
        ),
        _panel(
            # The extproc marks a failed request with error.type (metrics_impl.go, RecordRequestCompletion, v1.1.0).
            "Errors per second by model",
            "reqps",
            [(f'{by_model} (rate({GATEWAY_REQUEST_DURATION}_count{{{matcher},error_type!=""}}[{RATE_WINDOW}]))', "{{gen_ai_request_model}}")],
        ),
        _panel(
            "p95 request duration by model",
            "s",
            [(latency_quantile(0.95, GATEWAY_REQUEST_DURATION, matcher, "le, gen_ai_request_model"), "{{gen_ai_request_model}}")],
        ),
    ]


def _rows(plan: Plan) -> list[tuple[str, list[dict[str, Any]]]]:
    rows = [(f"{model.name} ({model.served_name})", model_panels(model, plan.config.observability)) for model in plan.models]
    if plan.gateway is not None:
        rows += [(f"Gateway client {client.name}", client_panels(client)) for client in plan.gateway.clients]
    return rows


def dashboard(plan: Plan) -> dict[str, Any]:
    """A row per model, and per gateway client where the stack has the gateway."""
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for title, row in _rows(plan):
        panels.append(
            {
                "type": "row",
                "id": next_id,
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        for index, panel in enumerate(row):
            column, line = index % PANELS_PER_ROW, index // PANELS_PER_ROW
            panel["id"] = next_id
            panel["gridPos"] = {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": column * PANEL_WIDTH, "y": y + line * PANEL_HEIGHT}
            panels.append(panel)
            next_id += 1
        y += math.ceil(len(row) / PANELS_PER_ROW) * PANEL_HEIGHT
    return {
        "uid": DASHBOARD_UID,
        "title": "vLLM models",
        "tags": ["vllm", "vllm-platform"],
        "timezone": "browser",
        "schemaVersion": 39,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        # Grafana's dashboard schema requires the annotation list, even empty.
        "annotations": {"list": []},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "current": dict(STACK_DATASOURCE)}
            ]
        },
        "panels": panels,
    }


def dashboard_config_map(plan: Plan, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": DASHBOARD_CONFIGMAP,
            "namespace": namespace,
            "labels": {GRAFANA_DASHBOARD_LABEL: GRAFANA_DASHBOARD_LABEL_VALUE, **MONITOR_SELECTOR_LABELS},
        },
        "data": {"vllm-models.json": json.dumps(dashboard(plan), indent=1, sort_keys=True)},
    }
