"""The alerts, dashboard queries and KEDA queries on the real engines: promtool and a Prometheus server on
loopback, from Debian's prometheus package (2.42). Alertmanager's routing and inhibitions are
tests/test_alerting_engine.py's.

Synthetic series carry the labels vLLM, kube-state-metrics, KEDA, Karpenter and the DCGM exporter really give them.
Each alert has a case where it fires, at the time it should, and one where it stays silent. Without the
binaries these tests skip with the reason; `.ci/run` installs them and sets REQUIRE_PROMETHEUS_TOOLS=1,
so CI never skips.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, NoReturn, Optional, Union

import pytest
import yaml

from tests.conftest import COMMITTED_STACKS, objects_of, plan_of, rendered_stack
from tests.test_charts import chart_objects
from tests.test_observability import _platform
from vllm_platform.config.platform import parse_config
from vllm_platform.contract import SERVING_CONTAINER
from vllm_platform.k8s import alerts, autoscaling, cluster_alerts, dashboards
from vllm_platform.pins import KUBE_PROMETHEUS_STACK
from vllm_platform.plan.plans import ModelPlan, Plan
from vllm_platform.plan.resolve import resolve

PROMQL_TIMEOUT = 30
READY_WITHIN = 60.0  # seconds for a loopback server to answer /-/ready: a bound, not a speed (it returns when ready)
# The longest a loopback server may live, killed by coreutils' timeout even where the test's own cleanup never runs
# (a killed worker, a cancelled job): a bound, far above any test's use of it.
SERVER_LIFETIME = 600
NAMESPACE = "inference"
# Where tools/alertmanager-from-debian unpacks Debian stable's amtool and Alertmanager.
UNPACKED_ALERTMANAGER = Path(__file__).resolve().parents[1] / "build" / "tools" / "alertmanager"


def missing(reason: str) -> NoReturn:
    """Skip for `reason`, or fail where REQUIRE_PROMETHEUS_TOOLS=1 says the tools must be there."""
    if os.environ.get("REQUIRE_PROMETHEUS_TOOLS") == "1":
        pytest.fail(f"{reason}, and REQUIRE_PROMETHEUS_TOOLS=1 says it must be")
    pytest.skip(reason)


def tool(name: str, *other_names: str) -> str:
    """The binary by its name, or one of its other names (Debian calls Alertmanager prometheus-alertmanager):
    from tools/alertmanager-from-debian's folder first, then PATH."""
    search = os.pathsep.join((str(UNPACKED_ALERTMANAGER), os.environ.get("PATH", "")))
    path = next((found for n in (name, *other_names) if (found := shutil.which(n, path=search))), None)
    if path is None:
        missing(f"{name} is not installed (apt-get install prometheus; make alert-tools)")
    return path


def run(*argv: str, stdin: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=PROMQL_TIMEOUT)


def rule_groups(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return rule["spec"]["groups"]


# --- promtool check rules: every rule, dashboard expression and KEDA query parses ----------------


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_rendered_rule_passes_promtool_check(stack: str, tmp_path: Path) -> None:
    promtool = tool("promtool")
    rendering = rendered_stack(stack)
    rules = tmp_path / "rules.yaml"
    for rule in objects_of(rendering, "PrometheusRule"):
        rules.write_text(yaml.safe_dump({"groups": rule_groups(rule)}))
        done = run(promtool, "check", "rules", str(rules))
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_chart_rule_passes_promtool_check(tmp_path: Path) -> None:
    """kube-prometheus-stack's own PrometheusRules, as its pinned chart renders them with prod's values."""
    promtool = tool("promtool")
    rules = [o for o in chart_objects("prod")[KUBE_PROMETHEUS_STACK.release] if o["kind"] == "PrometheusRule"]
    assert len(rules) > 20, "the chart's default rules are on"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [group for rule in rules for group in rule_groups(rule)]}))
    done = run(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_dashboard_and_keda_query_passes_promtool_check(stack: str, tmp_path: Path) -> None:
    """Wrapped as recording rules, which promtool parses exactly as Prometheus would evaluate them."""
    promtool = tool("promtool")
    rendering = rendered_stack(stack)
    board = json.loads(dashboards.dashboard_config_map(rendering.plan, "monitoring")["data"]["vllm-models.json"])
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [t["metadata"]["query"] for s in objects_of(rendering, "ScaledObject") for t in s["spec"]["triggers"] if t["type"] == "prometheus"]
    assert queries
    records = [{"record": f"check:query_{i}", "expr": expr} for i, expr in enumerate(queries)]
    rules = tmp_path / "queries.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": records}]}))
    done = run(promtool, "check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_refuses_a_broken_rule(tmp_path: Path) -> None:
    promtool = tool("promtool")
    rules = tmp_path / "broken.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]}))
    assert run(promtool, "check", "rules", str(rules)).returncode != 0


# --- promtool test rules: each alert fires when it should, and only then -------------------------


def alerts_plan() -> Plan:
    raw = _platform()
    raw["models"][0].update({"name": "chat", "replicas": {"min": 1, "max": 3}})
    raw["gateway"] = {
        "enabled": True,
        "clients": [{"name": "web", "apiKey": "k" * 40, "models": ["chat"], "tokensPerMinute": 1000, "counts": "total"}],
    }
    return resolve(parse_config(raw, ("gateway",)))


PLAN = alerts_plan()
MODEL = PLAN.models[0]
SERVED = MODEL.served_name
POD_A, POD_B = "chat-7d9f8c6b5-x2k4q", "chat-7d9f8c6b5-p8r1z"


def minutes(duration: str) -> int:
    return int(duration.removesuffix("m"))


NOT_READY = minutes(alerts.not_ready_for(MODEL))
PARTIAL = minutes(alerts.partial_for(MODEL))


def selector(name: str, **labels: str) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def target(name: str, pod: str = POD_A, **labels: str) -> str:
    """A series of a model's scrape target with the ServiceMonitor's labels only: `up`, and the API server's
    http_requests_total (prometheus-fastapi-instrumentator's), neither of which has vLLM's model_name or engine."""
    return selector(
        name, namespace=NAMESPACE, pod=pod, container=SERVING_CONTAINER, service="chat", endpoint="http", job="chat",
        instance="10.0.1.5:8000", **labels,
    )  # fmt: skip


def vllm(name: str, pod: str = POD_A, **labels: str) -> str:
    """A series of vLLM's own metrics: the target's labels, and the served name and engine vLLM adds."""
    return target(name, pod, model_name=SERVED, engine="0", **labels)


def http_requests(handler: str, method: str, status: str, values: str) -> dict[str, str]:
    return {"series": target("http_requests_total", handler=handler, method=method, status=status), "values": values}


def token_usage(kind: str, values: str, client: str = "web") -> dict[str, str]:
    """AI Gateway's token counter as the PodMonitor scrapes it from an extproc beside a proxy."""
    series = selector(
        "gen_ai_client_token_usage_sum", namespace="envoy-gateway-system", pod="envoy-llm-gateway-abc", client_id=client,
        gen_ai_token_type=kind, gen_ai_request_model=SERVED, gen_ai_operation_name="chat",
    )  # fmt: skip
    return {"series": series, "values": values}


def envoy_downstream(stat: str, values: str, **labels: str) -> dict[str, str]:
    series = selector(
        f"envoy_http_downstream_{stat}", namespace="envoy-gateway-system", pod="envoy-llm-gateway-abc",
        envoy_http_conn_manager_prefix="http-8080", **labels,
    )  # fmt: skip
    return {"series": series, "values": values}


def karpenter(name: str, pod: str = "karpenter-6f8b9c7d4-aaaaa", **labels: str) -> str:
    """A series of the Karpenter controller, as the platform's ServiceMonitor in `monitoring` scrapes it."""
    return selector(
        name, namespace="kube-system", service="karpenter", job="karpenter", endpoint="http-metrics", pod=pod,
        container="controller", instance="10.0.0.7:8080", **labels,
    )  # fmt: skip


def launch_errors(values: str, method: str = "Create", error: str = "InsufficientCapacityError") -> dict[str, str]:
    series = karpenter("karpenter_cloudprovider_errors_total", controller="nodeclaim.lifecycle", method=method, provider="aws", error=error)
    return {"series": series, "values": values}


def keda_errors(values: str, namespace: str = NAMESPACE) -> dict[str, str]:
    """KEDA's error count as its chart's ServiceMonitor leaves it: the target's `namespace` (keda) kept, the
    ScaledObject's own moved to `exported_namespace`."""
    series = selector(
        "keda_scaled_object_errors_total", namespace="keda", exported_namespace=namespace, scaledObject="chat",
        job="keda-operator", service="keda-operator", endpoint="metrics", instance="10.0.0.8:8080",
    )  # fmt: skip
    return {"series": series, "values": values}


def ksm(name: str, **labels: str) -> str:
    return selector(name, job="kube-state-metrics", instance="10.0.0.9:8080", **labels)


def deployment(name: str, model: str = "chat") -> str:
    return ksm(name, namespace=NAMESPACE, deployment=model)


def dcgm(name: str, gpu: str = "0", pod: str = POD_A, instance: str = "10.0.1.5:9400", **labels: str) -> str:
    return selector(
        name, gpu=gpu, UUID=f"GPU-5f1c{gpu}", pci_bus_id=f"00000000:00:1{gpu}.0", device=f"nvidia{gpu}",
        modelName="NVIDIA A10G", Hostname="ip-10-0-1-5", node="ip-10-0-1-5", namespace=NAMESPACE, pod=pod,
        container=SERVING_CONTAINER, job="dcgm-exporter", instance=instance, **labels,
    )  # fmt: skip


def gpu_labels(gpu: str = "0") -> dict[str, str]:
    return {"node": "ip-10-0-1-5", "gpu": gpu, "UUID": f"GPU-5f1c{gpu}"}


def histogram(name: str, bounds: dict[str, str], count: str) -> list[dict[str, str]]:
    """A histogram's buckets (bound as vLLM's client writes it -> values) and its count."""
    series = [{"series": vllm(f"{name}_bucket", le=le), "values": values} for le, values in bounds.items()]
    return [*series, {"series": vllm(f"{name}_bucket", le="+Inf"), "values": count}, {"series": vllm(f"{name}_count"), "values": count}]


def node_ready(node: str, ready_values: str) -> list[dict[str, str]]:
    """kube-state-metrics' Ready condition of a node: 1 on the status it has, 0 on the others."""
    flipped = " ".join(f"{1 - int(part.split('+')[0])}+{part.split('+', 1)[1]}" for part in ready_values.split())
    return [
        {"series": ksm("kube_node_status_condition", node=node, condition="Ready", status="true"), "values": ready_values},
        {"series": ksm("kube_node_status_condition", node=node, condition="Ready", status="false"), "values": flipped},
    ]


def ready(desired: str, available: str, model: str = "chat") -> list[dict[str, str]]:
    return [
        {"series": deployment("kube_deployment_spec_replicas", model), "values": desired},
        {"series": deployment("kube_deployment_status_replicas_available", model), "values": available},
    ]


def waiting(reason: str, values: str, pod: str = POD_A) -> dict[str, str]:
    """kube-state-metrics' waiting reason of the vllm container: a series only while the container waits."""
    series = ksm("kube_pod_container_status_waiting_reason", namespace=NAMESPACE, pod=pod, container=SERVING_CONTAINER, reason=reason, uid="u1")
    return {"series": series, "values": values}


BACKOFF = alerts.CRASH_BACKOFF_SECONDS // 60


def crash_every(run: int, crashes: int, horizon: int, pod: str = POD_A) -> list[dict[str, str]]:
    """A vLLM that exits after running `run` minutes, `crashes` times, each exit followed by the kubelet's
    longest back-off (the waiting reason's series, BACKOFF minutes) and a restart (the restart count's next
    step, every run + BACKOFF minutes), never Ready meanwhile; after the last restart it serves, Ready, until
    `horizon`."""
    period = run + BACKOFF
    waits = f"_x{run} " + f" _x{run - 1} ".join([f"1+0x{BACKOFF - 1} stale"] * crashes)
    count = " ".join(f"{k}+0x{period - 1}" for k in range(crashes)) + f" {crashes}+0x{horizon - crashes * period}"
    restarts = ksm("kube_pod_container_status_restarts_total", namespace=NAMESPACE, pod=pod, container=SERVING_CONTAINER, uid="u1")
    ready = ksm("kube_pod_container_status_ready", namespace=NAMESPACE, pod=pod, container=SERVING_CONTAINER, uid="u1")
    serving = f"0+0x{crashes * period - 1} 1+0x{horizon - crashes * period}"
    return [waiting("CrashLoopBackOff", waits, pod), {"series": restarts, "values": count}, {"series": ready, "values": serving}]


def probe_killed(model: ModelPlan) -> int:
    """Minutes a vLLM runs before its startup probe kills it: the model's whole startup budget."""
    return math.ceil(model.startup_budget_seconds / 60)


def looping(model: ModelPlan) -> int:
    """When VllmContainerCrashLooping fires for a vLLM its startup probe keeps killing (crash_every). Killed
    within the back-off window, it is in back-off within every window from its first crash on; killed later,
    once its CRASH_LOOP_RESTARTS-th restart counts, with the back-off just before it. Then the `for`."""
    run, hold = probe_killed(model), minutes(alerts.CRASH_LOOP_FOR)
    # The next back-off's first sample comes run + 1 minutes after the last one's, while the window still holds it.
    if run <= minutes(alerts.CRASH_LOOP_WINDOW):
        return run + hold
    return alerts.CRASH_LOOP_RESTARTS * (run + BACKOFF) - BACKOFF + hold


def crash_and_serve(start: int, serve: int, crashes: int, horizon: int, pod: str = POD_A) -> list[dict[str, str]]:
    """A vLLM that loads for `start` minutes, serves (Ready) for `serve`, crashes and backs off BACKOFF minutes,
    `crashes` times; then it serves until `horizon`. Ready each cycle, so its restarts do not count as a loop."""
    period = BACKOFF + start + serve
    waits = " ".join([f"1+0x{BACKOFF - 1} stale _x{start + serve - 1}"] * crashes)
    count = " ".join(f"{k}+0x{period - 1}" for k in range(crashes)) + f" {crashes}+0x{horizon - crashes * period}"
    ready_values = " ".join([f"0+0x{BACKOFF + start - 1} 1+0x{serve - 1}"] * crashes) + f" 1+0x{horizon - crashes * period}"
    restarts = ksm("kube_pod_container_status_restarts_total", namespace=NAMESPACE, pod=pod, container=SERVING_CONTAINER, uid="u1")
    ready = ksm("kube_pod_container_status_ready", namespace=NAMESPACE, pod=pod, container=SERVING_CONTAINER, uid="u1")
    return [waiting("CrashLoopBackOff", waits, pod), {"series": restarts, "values": count}, {"series": ready, "values": ready_values}]


def seldom(model: ModelPlan) -> int:
    """Minutes of running between crashes too far apart for CRASH_LOOP_RESTARTS of them to fit the window."""
    return minutes(alerts.crash_loop_restarts_window(model)) // (alerts.CRASH_LOOP_RESTARTS - 1) + 1 - BACKOFF


# Five minutes in back-off (kubelet's cap), the series gone stale, vLLM running for two, and again.
CRASH_LOOP = " ".join(["1+0x4 stale _"] * 5)
# Eval times: a firing case has two, silent then firing (the first a minute before its `for` runs out, which
# test_every_alert_has_a_firing_and_a_silent_case proves without `for`); a silent case has one.
At = Union[str, tuple[str, str]]
# alert -> [(case, series, eval time(s), alerts expected then as extra labels, or None for silent)]
CASES: dict[str, list[tuple[str, list[dict[str, str]], At, Optional[list[dict[str, str]]]]]] = {
    "VllmModelDown": [
        ("served, then lost every pod at 30 min", ready("1+0x60", "1+0x29 0+0x30"), ("31m", "32m"), [{}]),
        ("a cold start from zero", ready("0+0x29 1+0x30", "0+0x60"), "33m", None),
        ("woken from zero after serving", ready("1+0x19 0+0x9 1+0x30", "1+0x19 0+0x40"), "33m", None),
        ("woken from zero, served, then lost every pod", ready("1+0x9 0+0x9 1+0x40", "1+0x9 0+0x14 1+0x4 0+0x30"), ("31m", "32m"), [{}]),
        # A scrape of kube-state-metrics missed (a stale marker) mid-outage, past the window: the page holds.
        ("down from 30 min, a scrape missed at 55", ready("1+0x54 stale 1+0x20", "1+0x29 0+0x24 stale 0+0x20"), ("31m", "56m"), [{}]),
    ],
    "VllmModelNotReady": [
        ("wanted, never available", ready("1+0x60", "0+0x60"), (f"{NOT_READY - 1}m", f"{NOT_READY}m"), [{}]),
        ("at zero on purpose", ready("0+0x60", "0+0x60"), f"{NOT_READY + 1}m", None),
    ],
    "VllmReplicasUnavailable": [
        # Scaled from 1 to 7 at 10 min: wanted a full not-ready time at 10 + NOT_READY, then a cold start more.
        ("1 of 7 for an hour", ready("1+0x9 7+0x60", "1+0x70"), (f"{10 + NOT_READY + PARTIAL - 1}m", f"{10 + NOT_READY + PARTIAL}m"), [{}]),
        ("7 of 7 after a cold start", ready("1+0x9 7+0x60", "1+0x25 7+0x44"), f"{10 + NOT_READY + PARTIAL}m", None),
        ("a scale-up in steps", ready("1+0x9 3+0x9 5+0x9 7+0x40", "1+0x25 3+0x9 5+0x9 7+0x30"), f"{10 + NOT_READY + PARTIAL + 1}m", None),

    ],
    "VllmContainerCrashLooping": [
        ("crash, back-off, run, crash", [waiting("CrashLoopBackOff", CRASH_LOOP)], ("14m", "15m"), [{"pod": POD_A}]),
        ("one back-off, then serving", [waiting("CrashLoopBackOff", "1+0x4 stale")], "16m", None),
        ("creating", [waiting("ContainerCreating", "1+0x30")], "16m", None),
        # Killed by its startup probe each time (after over 5 min), so its back-offs leave gaps: its restarts
        # tell, the third one three periods in.
        ("killed by its startup probe, again and again", crash_every(probe_killed(MODEL), 8, 120),
         (f"{looping(MODEL) - 1}m", f"{looping(MODEL)}m"), [{"pod": POD_A}]),
        # Checked a `for` after its last restart: two in the window then, one short of a loop.
        ("crashing too seldom for a loop", crash_every(seldom(MODEL), 4, 150), f"{4 * (seldom(MODEL) + BACKOFF) + 15}m", None),
        # Loading 4 minutes and serving 2 between crashes: its back-offs are 6 minutes apart, past a 5-minute
        # window, and it is Ready each cycle, yet it never serves for long.
        ("crashing after serving a few minutes, again and again", crash_and_serve(4, 2, 8, 100),
         ("14m", "15m"), [{"pod": POD_A}]),
        ("crashing after serving longer than the window", crash_and_serve(4, 7, 4, 100), "60m", None),
    ],
    "VllmMetricsMissing": [
        ("one pod unscraped", [*ready("2+0x30", "2+0x30"), {"series": target("up"), "values": "1+0x30"}, {"series": target("up", POD_B), "values": "0+0x30"}, {"series": vllm("vllm:num_requests_waiting"), "values": "0+0x30"}], ("9m", "10m"), [{}]),
        ("scraped without vLLM's series", [*ready("1+0x30", "1+0x30"), {"series": target("up"), "values": "1+0x30"}], ("9m", "10m"), [{}]),
        ("every pod scraped", [*ready("2+0x30", "2+0x30"), {"series": target("up"), "values": "1+0x30"}, {"series": target("up", POD_B), "values": "1+0x30"}, {"series": vllm("vllm:num_requests_waiting"), "values": "0+0x30"}, {"series": vllm("vllm:num_requests_waiting", POD_B), "values": "0+0x30"}], "12m", None),
    ],
    "VllmQueueBacklogAtMaxReplicas": [
        ("40 waiting at max 3", [{"series": vllm("vllm:num_requests_waiting"), "values": "40+0x30"}, *ready("3+0x30", "3+0x30")], ("9m", "10m"), [{}]),
        ("40 waiting at 2 of 3", [{"series": vllm("vllm:num_requests_waiting"), "values": "40+0x30"}, *ready("2+0x30", "2+0x30")], "12m", None),
    ],
    "GatewayClientNearTokenLimit": [
        # 900 tokens a minute (600 in, 300 out) of a 1000 budget; then 500.
        ("at 90 % of its budget", [token_usage("input", "0+600x30"), token_usage("output", "0+300x30")], ("9m", "10m"), [{}]),
        ("at half its budget", [token_usage("input", "0+300x30"), token_usage("output", "0+200x30")], "12m", None),
        ("another client near its own", [token_usage("input", "0+950x30", client="batch")], "12m", None),
    ],
    "GatewayServerErrors": [
        ("one in ten a 5xx", [envoy_downstream("rq_total", "0+100x30"), envoy_downstream("rq_xx", "0+10x30", envoy_response_code_class="5")], ("5m", "6m"), [{}]),
        ("one in a hundred", [envoy_downstream("rq_total", "0+100x30"), envoy_downstream("rq_xx", "0+1x30", envoy_response_code_class="5")], "12m", None),
    ],
    "KedaScalerErrors": [
        ("errors every poll while serving", [keda_errors("0+4x30"), *ready("1+0x30", "1+0x30")], ("10m", "11m"), [{}]),
        # No pod available yet, so no queue series: the trigger fails until the first one serves at 20 min.
        ("a first cold start", [keda_errors("0+4x19 80+0x20"), *ready("1+0x40", "0+0x19 1+0x20")], "15m", None),
        ("old errors", [keda_errors("5+0x30")], "12m", None),
        ("another namespace's object of the same name", [keda_errors("0+4x30", namespace="batch")], "12m", None),
    ],
    "VllmTimeToFirstTokenBudgetBurning": [
        ("every request over 2.5 s", histogram("vllm:time_to_first_token_seconds", {"1.0": "0+0x70", "2.5": "0+0x70"}, "0+10x70"), ("2m", "3m"), [{}]),
        # The finding: 1.2 s under a 2.5 s SLO, which a p95 from histogram_quantile reads as 2.4 s.
        ("every request at 1.2 s", histogram("vllm:time_to_first_token_seconds", {"1.0": "0+0x70", "2.5": "0+10x70"}, "0+10x70"), "10m", None),
    ],
    "VllmTimeToFirstTokenSloBreached": [
        ("half over 2.5 s", histogram("vllm:time_to_first_token_seconds", {"2.5": "0+5x70"}, "0+10x70"), ("15m", "16m"), [{}]),
        ("one in fifty over", histogram("vllm:time_to_first_token_seconds", {"2.5": "0+49x70"}, "0+50x70"), "20m", None),
        ("every request at 1.2 s", histogram("vllm:time_to_first_token_seconds", {"1.0": "0+0x70", "2.5": "0+10x70"}, "0+10x70"), "65m", None),
    ],
    "VllmInterTokenLatencyHigh": [
        ("half the tokens over 0.2 s", histogram("vllm:inter_token_latency_seconds", {"0.2": "0+50x40"}, "0+100x40"), ("15m", "16m"), [{}]),
        ("one in a hundred", histogram("vllm:inter_token_latency_seconds", {"0.2": "0+99x40"}, "0+100x40"), "20m", None),
    ],
    "VllmRequestLatencyHigh": [
        # prometheus_client writes the bound as 60.0: the matcher takes it in either spelling.
        ("half over 60 s", histogram("vllm:e2e_request_latency_seconds", {"60.0": "0+5x40"}, "0+10x40"), ("15m", "16m"), [{}]),
        ("all within", histogram("vllm:e2e_request_latency_seconds", {"60.0": "0+10x40"}, "0+10x40"), "20m", None),
    ],
    "VllmRequestErrors": [
        ("one in ten fails", [{"series": vllm("vllm:request_success_total", finished_reason="error"), "values": "0+1x30"}, {"series": vllm("vllm:request_success_total", finished_reason="stop"), "values": "0+9x30"}], ("10m", "11m"), [{}]),
        ("none fails", [{"series": vllm("vllm:request_success_total", finished_reason="error"), "values": "0+0x30"}, {"series": vllm("vllm:request_success_total", finished_reason="stop"), "values": "0+9x30"}], "12m", None),
    ],
    "VllmServerErrors": [
        # The probes' 100 answers a minute would put it under 1 % if they counted.
        ("one answer in ten a 5xx", [http_requests("/v1/chat/completions", "POST", "5xx", "0+1x30"), http_requests("/v1/chat/completions", "POST", "2xx", "0+9x30"), http_requests("/v1/models", "GET", "2xx", "0+100x30")], ("10m", "11m"), [{}]),
        ("only 4xx", [http_requests("/v1/chat/completions", "POST", "4xx", "0+1x30"), http_requests("/v1/chat/completions", "POST", "2xx", "0+9x30")], "12m", None),
    ],
    "VllmRequestsAborted": [
        ("three in ten abandoned", [{"series": vllm("vllm:request_success_total", finished_reason="abort"), "values": "0+3x30"}, {"series": vllm("vllm:request_success_total", finished_reason="stop"), "values": "0+7x30"}], ("15m", "16m"), [{}]),
        ("one in twenty", [{"series": vllm("vllm:request_success_total", finished_reason="abort"), "values": "0+1x30"}, {"series": vllm("vllm:request_success_total", finished_reason="length"), "values": "0+19x30"}], "17m", None),
    ],
    "VllmPreempting": [
        ("preempting", [{"series": vllm("vllm:num_preemptions_total"), "values": "0+2x30"}], ("15m", "16m"), [{}]),
        ("long ago", [{"series": vllm("vllm:num_preemptions_total"), "values": "12+0x30"}], "17m", None),
    ],
    "VllmKvCacheNearlyFull": [
        ("95% full", [{"series": vllm("vllm:kv_cache_usage_perc"), "values": "0.95+0x30"}], ("9m", "10m"), [{"pod": POD_A}]),
        ("half full", [{"series": vllm("vllm:kv_cache_usage_perc"), "values": "0.5+0x30"}], "12m", None),
    ],
    "KarpenterDown": [
        ("both controllers down", [{"series": karpenter("up"), "values": "0+0x30"}, {"series": karpenter("up", "karpenter-6f8b9c7d4-bbbbb"), "values": "0+0x30"}], ("9m", "10m"), [{}]),
        ("never scraped", [{"series": deployment("kube_deployment_spec_replicas"), "values": "1+0x30"}], ("9m", "10m"), [{}]),
        ("one of two up", [{"series": karpenter("up"), "values": "1+0x30"}, {"series": karpenter("up", "karpenter-6f8b9c7d4-bbbbb"), "values": "0+0x30"}], "12m", None),
    ],
    "GpuNodeLaunchesFailing": [
        ("no capacity for half an hour", [launch_errors("0+1x40")], ("15m", "16m"), [{"error": "InsufficientCapacityError"}]),
        ("one refusal, then a launch", [launch_errors("0+1x1 2+0x40")], "32m", None),
        ("a node's deletion failing", [launch_errors("0+1x40", method="Delete", error="")], "32m", None),
    ],
    "GpuFallenOffBus": [
        ("Xid 79", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="79", err_msg="GPU has fallen off the bus"), "values": "79+0x30"}], ("0m", "1m"), [gpu_labels()]),
        # The exporter stops listing a GPU that is gone: the alert outlives its series.
        ("Xid 79, then no series", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="79", err_msg="GPU has fallen off the bus"), "values": "79+0x9"}], ("0m", "30m"), [gpu_labels()]),
        ("Xid 43", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="GPU stopped processing"), "values": "43+0x30"}], "3m", None),
    ],
    "GpuXidError": [
        ("non-zero from its first sample at 5 min", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="x"), "values": "_x5 43+0x30"}], ("4m", "5m"), [gpu_labels()]),
        ("a new code after 0", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="0", err_msg=""), "values": "0+0x19"}, {"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="x"), "values": "_x20 43+0x20"}], ("19m", "20m"), [gpu_labels()]),
        ("an old Xid", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="x"), "values": "43+0x40"}], "30m", None),
        # A series that begins non-zero is news whatever came before it: a new pod label, or a restarted exporter.
        ("its pod changed, the Xid non-zero from the new series' first sample", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="x"), "values": "43+0x19"}, {"series": dcgm("DCGM_FI_DEV_XID_ERRORS", pod=POD_B, err_code="43", err_msg="x"), "values": "_x20 43+0x20"}], ("19m", "20m"), [gpu_labels()]),
        ("the exporter restarted, the same code from its first sample", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="x"), "values": "43+0x19"}, {"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="x", instance="10.0.1.9:9400"), "values": "_x21 43+0x20"}], ("20m", "22m"), [gpu_labels()]),
        ("the restarted exporter's Xid, ten minutes on", [{"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="x"), "values": "43+0x19"}, {"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="43", err_msg="x", instance="10.0.1.9:9400"), "values": "_x21 43+0x20"}], "33m", None),
    ],
    "NodeWithGpusNotReady": [
        ("not ready for 3 minutes", [*node_ready("ip-10-0-1-5", "1+0x9 0+0x20"), {"series": ksm("kube_node_status_capacity", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}], ("11m", "12m"), [{"node": "ip-10-0-1-5"}]),
        ("not ready for a minute", [*node_ready("ip-10-0-1-5", "1+0x11 0+0x20"), {"series": ksm("kube_node_status_capacity", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}], "13m", None),
        ("a node without GPUs", [*node_ready("ip-10-0-1-6", "1+0x9 0+0x20")], "13m", None),
    ],
    "GpuUnavailable": [
        ("one withdrawn", [{"series": ksm("kube_node_status_capacity", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}, {"series": ksm("kube_node_status_allocatable", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "3+0x30"}, *({"series": dcgm("DCGM_FI_DEV_GPU_UTIL", str(g)), "values": "50+0x30"} for g in range(4))], ("9m", "10m"), [{"node": "ip-10-0-1-5"}]),
        ("no DCGM series at all", [{"series": ksm("kube_node_status_capacity", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}, {"series": ksm("kube_node_status_allocatable", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}], ("9m", "10m"), [{"node": "ip-10-0-1-5"}]),
        ("DCGM lists three of four", [{"series": ksm("kube_node_status_capacity", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}, {"series": ksm("kube_node_status_allocatable", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}, *({"series": dcgm("DCGM_FI_DEV_GPU_UTIL", str(g)), "values": "50+0x30"} for g in range(3))], ("9m", "10m"), [{"node": "ip-10-0-1-5"}]),
        ("all four", [{"series": ksm("kube_node_status_capacity", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}, {"series": ksm("kube_node_status_allocatable", node="ip-10-0-1-5", resource="nvidia_com_gpu", unit="integer"), "values": "4+0x30"}, *({"series": dcgm("DCGM_FI_DEV_GPU_UTIL", str(g)), "values": "50+0x30"} for g in range(4))], "12m", None),
    ],
}  # fmt: skip


def rules_under_test() -> dict[str, dict[str, Any]]:
    rule = alerts.prometheus_rule(PLAN, "monitoring")
    return {r["alert"]: r for g in rule_groups(rule) for r in g["rules"]}


def promtool_test(promtool: str, rules: list[dict[str, Any]], tests: list[dict[str, Any]], directory: Path) -> None:
    """`promtool test rules` of `tests` against `rules`, whose annotations promtool check has already parsed."""
    bare = [{k: v for k, v in rule.items() if k != "annotations"} for rule in rules]
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "under-test", "rules": bare}]}))
    (directory / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}))
    done = run(promtool, "test", "rules", str(directory / "test.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


def unit_test(name: str, case: str, series: list[dict[str, str]], evals: list[tuple[str, list[dict[str, str]]]]) -> dict[str, Any]:
    """One promtool test of the alert `name`: at each eval time, exactly the alerts with these extra labels."""
    labels = rules_under_test()[name]["labels"]
    checks = [{"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": {**labels, **extra}} for extra in expected]}
              for at, expected in evals]  # fmt: skip
    return {"name": f"{name}: {case}", "interval": "1m", "input_series": series, "alert_rule_test": checks}


def test_every_alert_has_a_firing_and_a_silent_case(tmp_path: Path) -> None:
    """Each firing case is silent at an instant, then fires: a firing case tells the time it fires, not only
    that it does. Without `for`, the same alert already fires at that instant and `for` minus a minute
    before it, so its condition holds all through and `for` alone keeps it silent, a minute short of
    running out. An alert without `for` is silent the minute before its condition begins."""
    rules = rules_under_test()
    assert set(CASES) == set(rules) | {a for a in CASES if a.startswith("Gpu")}
    held = []
    for name, cases in CASES.items():
        assert any(expected is None for _, _, _, expected in cases), f"{name} is never silent"
        firing = [(case, series, at, expected) for case, series, at, expected in cases if expected]
        assert firing, f"{name} never fires"
        for case, series, at, expected in firing:
            assert isinstance(at, tuple) and minutes(at[0]) < minutes(at[1]), f"{name}: {case} has no silent instant before it fires"
            pending = minutes(rules[name].get("for", "0m"))
            if pending:
                held.append(unit_test(name, case, series, [(f"{minutes(at[0]) - pending + 1}m", expected), (at[0], expected)]))
    without_for = [{k: v for k, v in rule.items() if k not in ("for", "keep_firing_for")} for rule in rules.values()]
    promtool_test(tool("promtool"), without_for, held, tmp_path)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_alert_fires_when_it_should_and_only_then(name: str, tmp_path: Path) -> None:
    tests = [
        unit_test(name, case, series, [(at[0], []), (at[1], expected)] if isinstance(at, tuple) else [(at, expected or [])])
        for case, series, at, expected in CASES[name]
    ]
    promtool_test(tool("promtool"), [rules_under_test()[name]], tests, tmp_path)


def every_minute(name: str, labels: dict[str, str], spans: list[tuple[range, bool]]) -> list[dict[str, Any]]:
    """promtool checks of the alert `name` at every minute of each span: firing, with exactly `labels`, or silent."""
    return [{"eval_time": f"{at}m", "alertname": name, "exp_alerts": [{"exp_labels": labels}] if firing else []}
            for span, firing in spans for at in span]  # fmt: skip


def test_gpu_unavailable_takes_over_from_a_gpu_fallen_off_the_bus(tmp_path: Path) -> None:
    """GpuFallenOffBus outlives its series by an hour (keep_firing_for), and no longer: GpuUnavailable, which
    counts the GPUs DCGM lists against the node's capacity, pages from 10 minutes after the GPU went missing,
    well within that hour, for as long as it stays missing. Near-identical and silent: DCGM still lists the
    GPU (only the Xid series went), so nothing says it is still lost once the hour is over."""
    node = {"node": "ip-10-0-1-5", "resource": "nvidia_com_gpu", "unit": "integer"}
    rules = {r["alert"]: r for r in cluster_alerts.gpu_rules()}
    node_series = [{"series": ksm(f"kube_node_status_{kind}", **node), "values": "1+0x130"} for kind in ("capacity", "allocatable")]
    # Xid 79 from the start; the exporter stops listing the GPU at 10 min.
    xid = {"series": dcgm("DCGM_FI_DEV_XID_ERRORS", err_code="79", err_msg="GPU has fallen off the bus"), "values": "79+0x9 stale"}
    fallen = {**rules["GpuFallenOffBus"]["labels"], **gpu_labels()}
    unavailable = {**rules["GpuUnavailable"]["labels"], "node": "ip-10-0-1-5"}
    bus = every_minute("GpuFallenOffBus", fallen, [(range(1), False), (range(1, 70), True), (range(71, 130), False)])
    tests = [
        {"name": "the GPU gone from DCGM", "interval": "1m",
         "input_series": [*node_series, xid, {"series": dcgm("DCGM_FI_DEV_GPU_UTIL"), "values": "0+0x9 stale"}],
         "alert_rule_test": bus + every_minute("GpuUnavailable", unavailable, [(range(20), False), (range(20, 130), True)])},
        {"name": "the GPU still listed by DCGM", "interval": "1m",
         "input_series": [*node_series, xid, {"series": dcgm("DCGM_FI_DEV_GPU_UTIL"), "values": "0+0x130"}],
         "alert_rule_test": bus + every_minute("GpuUnavailable", unavailable, [(range(130), False)])},
    ]  # fmt: skip
    promtool_test(tool("promtool"), [rules["GpuFallenOffBus"], rules["GpuUnavailable"]], tests, tmp_path)


def test_the_dashboards_slo_share_counts_requests_at_1_2_s_within_2_5_s(tmp_path: Path) -> None:
    """The finding of the p95: every request at 1.2 s, under buckets of 1.0 and 2.5 s, reads as a p95 of
    2.4 s on the time-to-first-token panel; the panel beside it, the share within the 2.5 s SLO that the
    alerts count, reads all of them as within. Both expressions as the rendered dashboard has them."""
    panels = dashboards.dashboard(PLAN)["panels"]
    (row,) = [p for p in panels if p["title"] == "Time to first token"]
    (share,) = [p for p in panels if p["title"].startswith("Requests with a first token within 2.5 s")]
    p95 = next(t["expr"] for t in row["targets"] if t["legendFormat"] == "p95")
    series = histogram("vllm:time_to_first_token_seconds", {"1.0": "0+0x30", "2.5": "0+10x30"}, "0+10x30")
    checks = [{"expr": share["targets"][0]["expr"], "eval_time": "20m", "exp_samples": [{"labels": "{}", "value": 1}]},
              {"expr": p95, "eval_time": "20m", "exp_samples": [{"labels": "{}", "value": 2.425}]}]  # fmt: skip
    promtool_test(tool("promtool"), [], [{"interval": "1m", "input_series": series, "promql_expr_test": checks}], tmp_path)


# --- prod's models on their own durations: the time-sensitive alerts of the rendered rules -------------


def prod_model_tests(model: ModelPlan, labels: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """One of prod's models' outage, not-ready, replicas and crash-loop timelines, every time from its plan
    (its not-ready time, outage window, cold start and startup budget), each alert checked at every minute.
    An outage pages once: VllmModelDown fires from 2 minutes in until a pod serves again, past its window,
    so VllmModelNotReady, firing from its own time on, stays muted under it all along (the inhibition)."""
    name, pod = model.name, f"{model.name}-7d9f8c6b5-x2k4q"
    not_ready, window, partial = (minutes(f(model)) for f in (alerts.not_ready_for, alerts.outage_window, alerts.partial_for))
    lost = 30  # every pod, or one, lost then
    back = lost + window + 10  # a pod serves again
    end = back + 10
    crashing, crashes = probe_killed(model) + BACKOFF, 6
    rare = seldom(model) + BACKOFF

    def case(title: str, series: list[dict[str, str]], checks: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": f"{name}: {title}", "interval": "1m", "input_series": series, "alert_rule_test": checks}

    def check(alert: str, spans: list[tuple[range, bool]], **extra: str) -> list[dict[str, Any]]:
        return every_minute(alert, {**labels[alert], **extra}, spans)

    return [
        case("served, lost every pod, served again", ready(f"2+0x{end}", f"2+0x{lost - 1} 0+0x{back - lost - 1} 2+0x{end - back}", name),
             check("VllmModelDown", [(range(lost + 2), False), (range(lost + 2, back), True), (range(back, end), False)])
             + check("VllmModelNotReady", [(range(lost + not_ready), False), (range(lost + not_ready, back), True), (range(back, end), False)])),
        case("wanted from its first deploy, never available", ready(f"1+0x{end}", f"0+0x{end}", name),
             check("VllmModelNotReady", [(range(not_ready), False), (range(not_ready, end), True)])
             + check("VllmModelDown", [(range(end), False)])),
        case("deployed at 10 min, serving a minute within its not-ready time", ready(f"0+0x9 1+0x{end - 10}", f"0+0x{10 + not_ready - 2} 1+0x{end - 9 - not_ready}", name),
             check("VllmModelNotReady", [(range(end), False)]) + check("VllmModelDown", [(range(end), False)])),
        case("a replica lost, never replaced", ready(f"2+0x{end}", f"2+0x{lost - 1} 1+0x{end - lost}", name),
             check("VllmReplicasUnavailable", [(range(lost + partial), False), (range(lost + partial, end), True)])),
        # kube-state-metrics' pod replaced: its series come back under a new instance while the old ones linger
        # in the lookbacks (the 8B's shortfall lookback outlasts its `for`); one Deployment, counted once.
        case("all serving, kube-state-metrics replaced", [
            *ready(f"2+0x{lost - 1} stale", f"2+0x{lost - 1} stale", name),  # the old target gone: stale markers
            *({"series": deployment(metric, name).replace("10.0.0.9", "10.0.0.10"), "values": f"_x{lost} 2+0x{end - lost}"}
              for metric in ("kube_deployment_spec_replicas", "kube_deployment_status_replicas_available")),
        ], check("VllmReplicasUnavailable", [(range(end), False)]) + check("VllmModelDown", [(range(end), False)])),
        case("a replica lost, replaced a minute within its cold start", ready(f"2+0x{end}", f"2+0x{lost - 1} 1+0x{partial - 2} 2+0x{end - lost - partial + 1}", name),
             check("VllmReplicasUnavailable", [(range(end), False)])),
        # Serving after its last restart, it is quiet again once that restart's back-off leaves the back-off
        # window, though its restarts stay in theirs for the better part of an hour.
        case("killed by its startup probe, again and again, then serving", crash_every(probe_killed(model), crashes, crashes * crashing + 20, pod),
             check("VllmContainerCrashLooping", [(range(looping(model)), False), (range(looping(model), crashes * crashing), True),
                                                 (range(crashes * crashing + minutes(alerts.CRASH_LOOP_WINDOW), crashes * crashing + 20), False)], pod=pod)),
        case("crashing too seldom for a loop", crash_every(seldom(model), crashes, crashes * rare, pod),
             check("VllmContainerCrashLooping", [(range(crashes * rare), False)], pod=pod)),
    ]  # fmt: skip


PROD_TIMED = ("VllmModelDown", "VllmModelNotReady", "VllmReplicasUnavailable", "VllmContainerCrashLooping")


def test_prods_models_page_for_an_outage_once_and_on_their_own_durations(tmp_path: Path) -> None:
    """The rendered prod rule's alerts of PROD_TIMED, both models' (an 8B and a 70B, whose durations differ),
    in one promtool run: the cases of prod_model_tests. Only those rules: promtool evaluates every rule of
    the file at every minute of every case, and the others would only slow it down."""
    rendering = rendered_stack("prod")
    (rule,) = objects_of(rendering, "PrometheusRule")
    rules = [r for g in rule_groups(rule) for r in g["rules"] if r["alert"] in PROD_TIMED]
    models = rendering.plan.models
    assert len({alerts.not_ready_for(m) for m in models}) == 2, "prod's models have durations of their own"
    tests = [
        test
        for model in models
        for test in prod_model_tests(model, {r["alert"]: r["labels"] for r in rules if r["labels"].get("model") == model.name})
    ]
    promtool_test(tool("promtool"), rules, tests, tmp_path)


# --- a Prometheus server: each ScaledObject's query on backfilled series --------------------------


def scaling_plan() -> Plan:
    raw = _platform()
    template = raw["models"][0]
    raw["models"] = [
        {**template, "name": name, "servedModelName": name, "replicas": replicas}
        for name, replicas in (("alpha", {"min": 1, "max": 3}), ("beta", {"min": 1, "max": 3}),
                               ("gamma", {"min": 1, "max": 3}), ("delta", {"min": 0, "max": 2}))
    ]  # fmt: skip
    return plan_of(raw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def prometheus_server(openmetrics: str, tmp_path: Path) -> Iterator[str]:
    """A Prometheus on loopback over blocks backfilled from `openmetrics`; stopped on exit, whatever happens."""
    promtool, binary = tool("promtool"), tool("prometheus")
    source, data = tmp_path / "series.om", tmp_path / "data"
    source.write_text(openmetrics)
    done = run(promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data))
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "prometheus.yml").write_text("global: {}\n")
    address = f"127.0.0.1:{free_port()}"
    with loopback_server(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         f"--web.listen-address={address}", "--storage.tsdb.retention.time=30d"], address,
    ) as url:  # fmt: skip
        yield url


def server_ready(url: str, deadline: float) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"{url}/-/ready", timeout=max(deadline - time.monotonic(), 0.01)) as answer:
            return bool(answer.status == 200)
    return False


@contextlib.contextmanager
def loopback_server(argv: list[str], address: str) -> Iterator[str]:
    """A server of Prometheus' family on `address`, ready (its /-/ready within 10 s); stopped on exit, whatever happens."""
    url = f"http://{address}"
    bounded = ["timeout", "--kill-after=5", str(SERVER_LIFETIME), *argv] if shutil.which("timeout") else argv
    process = subprocess.Popen(bounded, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # One deadline for the whole wait, each attempt's timeout included: a server that accepts the
        # connection and never answers cannot stretch it.
        deadline = time.monotonic() + READY_WITHIN
        while not server_ready(url, deadline):
            if process.poll() is not None:
                pytest.fail(f"{Path(argv[0]).name} exited: {process.stderr.read() if process.stderr else ''}")
            if time.monotonic() >= deadline:
                pytest.fail(f"{Path(argv[0]).name} was not ready within {READY_WITHIN:g} s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def instant_query(url: str, query: str, at: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=5) as answer:
        document = json.load(answer)
    assert document["status"] == "success", document
    return document["data"]["result"]


# The committed stacks' rendered queues on the same server: prod's 8B has series (one pod here, and a model of the
# same name in another namespace), its 70B none, and every other stack's model of those names reads the same.
RENDERED_WAITING = {("meta-llama/Llama-3.1-8B-Instruct", NAMESPACE, "llama-8b-1"): 6,
                    ("meta-llama/Llama-3.1-8B-Instruct", "elsewhere", "llama-8b-9"): 100}  # fmt: skip


def rendered_scaled_objects() -> list[tuple[str, dict[str, Any], str]]:
    """(stack, ScaledObject, the model's served name) of every committed stack's rendered ScaledObject."""
    found = []
    for stack in COMMITTED_STACKS:
        rendering = rendered_stack(stack)
        for scaled in objects_of(rendering, "ScaledObject"):
            found.append((stack, scaled, rendering.plan.model(scaled["metadata"]["name"]).served_name))
    return found


def test_each_scaled_object_reads_its_own_models_queue_on_a_real_prometheus(tmp_path: Path) -> None:
    plan = scaling_plan()
    at = float(int(time.time()) - 3600)
    waiting = {("alpha", NAMESPACE, "alpha-1"): 3, ("alpha", NAMESPACE, "alpha-2"): 4, ("beta", NAMESPACE, "beta-1"): 5,
               ("alpha", "elsewhere", "alpha-9"): 100, **RENDERED_WAITING}  # fmt: skip
    lines = ["# TYPE vllm:num_requests_waiting gauge"]
    for (model, namespace, pod), value in waiting.items():
        labels = f'namespace="{namespace}",model_name="{model}",engine="0",pod="{pod}"'
        lines += [f"vllm:num_requests_waiting{{{labels}}} {value} {at - step * 15:.0f}" for step in range(8, -1, -1)]
    openmetrics = "\n".join([*lines, "# EOF", ""])
    scaled = {m.name: autoscaling.scaled_object(m, "http://p:9090", "s:9090")["spec"] for m in plan.models}
    rendered = rendered_scaled_objects()
    with prometheus_server(openmetrics, tmp_path) as url:
        answers = {name: instant_query(url, spec["triggers"][0]["metadata"]["query"], at) for name, spec in scaled.items()}
        rendered_answers = [instant_query(url, queue_trigger(o["spec"])["metadata"]["query"], at) for _, o, _ in rendered]
    assert [float(r["value"][1]) for r in answers["alpha"]] == [7.0], "both pods, and nothing from another namespace"
    assert [float(r["value"][1]) for r in answers["beta"]] == [5.0]
    # No series: an empty vector, not 0. What it means is the ScaledObject's to say.
    assert answers["gamma"] == [] and answers["delta"] == []
    gamma, delta = scaled["gamma"], scaled["delta"]
    assert gamma["triggers"][0]["metadata"]["ignoreNullValues"] == "false" and gamma["fallback"]["replicas"] == 1
    assert delta["triggers"][0]["metadata"]["ignoreNullValues"] == "true" and "fallback" not in delta
    # As the committed stacks render them: each reads its own model in its own namespace, and where its model has
    # no series the empty answer means what its replicas say: an error and a held fallback above zero, 0 at zero.
    assert {stack for stack, _, _ in rendered} >= {"dev", "staging", "prod"}
    for (stack, scaled_object, served), answer in zip(rendered, rendered_answers):
        namespace, spec = scaled_object["metadata"]["namespace"], scaled_object["spec"]
        seeded = sum(v for (model, ns, _), v in RENDERED_WAITING.items() if (model, ns) == (served, namespace))
        where = f"{stack}'s {scaled_object['metadata']['name']}"
        if seeded:
            assert [float(r["value"][1]) for r in answer] == [seeded], where
            continue
        assert answer == [], where
        if spec["minReplicaCount"] > 0:
            assert queue_trigger(spec)["metadata"]["ignoreNullValues"] == "false", where
            assert spec["fallback"]["replicas"] == spec["minReplicaCount"], where
        else:
            assert queue_trigger(spec)["metadata"]["ignoreNullValues"] == "true" and "fallback" not in spec, where
    assert any(answer == [] for answer in rendered_answers) and any(answer != [] for answer in rendered_answers)


def queue_trigger(spec: dict[str, Any]) -> dict[str, Any]:
    (trigger,) = [t for t in spec["triggers"] if t["type"] == "prometheus"]
    return trigger
