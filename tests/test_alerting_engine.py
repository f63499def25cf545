"""Alertmanager routing and inhibitions on the real engines: amtool and an Alertmanager on loopback, from
Debian stable's prometheus-alertmanager package (0.28, which tools/alertmanager-from-debian unpacks into
build/tools/alertmanager). They skip, or fail under REQUIRE_PROMETHEUS_TOOLS=1, as the tests of
tests/test_alert_engine.py do, and an amtool too old to read the config as rendered counts as missing.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import objects_of, rendered_stack, stack_document
from tests.test_alert_engine import NAMESPACE, free_port, loopback_server, missing, rule_groups, run, tool
from tests.test_charts import chart_objects
from tests.test_observability import _release_inputs
from vllm_platform.config.alerting import Alerting
from vllm_platform.config.loader import stack_config
from vllm_platform.k8s import alerting
from vllm_platform.pins import KUBE_PROMETHEUS_STACK

# Alertmanager 0.26 added a webhook's `url_file`, which the rendered config uses (the cluster runs 0.34): an amtool
# before it, such as bookworm's 0.25, cannot read the config as rendered.
URL_FILE_SINCE = (0, 26)
LISTED_WITHIN = 30.0  # seconds for Alertmanager to list the alerts posted to it: a bound, not a speed


def prod_alerting() -> Any:
    return stack_config(stack_document("prod")).platform().observability.alertmanager


def topic_and_hook_alerting() -> Alerting:
    """The receiver kinds prod's example does not show: an SNS topic (critical) and a generic webhook (both)."""
    return Alerting.model_validate({
        "receivers": [{"name": "topic", "sns": {"topicArn": "arn:aws:sns:us-west-2:123456789012:llm-alerts"}},
                      {"name": "hook", "webhook": {"url": "https://hooks.example.com/alerts"}}],
        "critical": ["topic", "hook"], "warning": ["hook"], "watchdog": "hook",
    })  # fmt: skip


CONFIGS = {"prod": prod_alerting, "sns and webhook": topic_and_hook_alerting, "no receivers": lambda: None}


def version_of(output: str) -> tuple[int, int]:
    """Major and minor of `amtool --version`, such as "amtool, version 0.28.1+ds (branch: debian/sid, ...)"."""
    found = re.search(r"\bversion (\d+)\.(\d+)\.", output)
    assert found, f"no version in {output!r}"
    return int(found[1]), int(found[2])


@functools.lru_cache(maxsize=None)
def amtool_version(amtool: str) -> tuple[int, int]:
    done = run(amtool, "--version")
    return version_of(done.stdout + done.stderr)


def new_enough(binary: str) -> str:
    """`binary` (amtool or Alertmanager), where it reads the config as rendered; else skip, or fail in CI."""
    version = amtool_version(binary)
    if version < URL_FILE_SINCE:
        missing(f"{binary} is {'.'.join(map(str, version))}, before {'.'.join(map(str, URL_FILE_SINCE))}, which a webhook's "
                "url_file needs (run tools/alertmanager-from-debian for Debian stable's)")
    return binary


def amtool_binary() -> str:
    return new_enough(tool("amtool"))


def written(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_amtool_version_is_read_from_what_it_prints() -> None:
    assert version_of("amtool, version 0.25.0 (branch: debian/sid, revision: 0.25.0-1+b4)") == (0, 25)
    assert version_of("amtool, version 0.28.1+ds (branch: debian/sid, revision: 0.28.1+ds-1)") == (0, 28)
    assert version_of("alertmanager, version 0.34.0 (branch: HEAD, revision: b2099eaa2c9e)") == (0, 34)


@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_the_rendered_alertmanager_config_passes_amtool_check(which: str, tmp_path: Path) -> None:
    amtool = amtool_binary()
    config = alerting.alertmanager_config(CONFIGS[which]())
    kinds = {key for receiver in config["receivers"] for key in receiver if key.endswith("_configs")}
    assert kinds == {"prod": {"pagerduty_configs", "slack_configs", "webhook_configs"},
                     "sns and webhook": {"sns_configs", "webhook_configs"}, "no receivers": set()}[which]  # fmt: skip
    done = run(amtool, "check-config", str(written(config, tmp_path / "alertmanager.yaml")))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    if which == "sns and webhook":
        path = tmp_path / "alertmanager.yaml"
        assert routed_to(amtool, path, {"alertname": "VllmModelDown", "severity": "critical"}) == "topic,hook"
        assert routed_to(amtool, path, {"alertname": "VllmPreempting", "severity": "warning"}) == "hook"


def matched_labels(route: dict[str, Any]) -> set[str]:
    """The label names the matchers of `route` and its children name (each matcher is `name op "value"`)."""
    assert not {"match", "match_re"} & set(route), "the routes use matchers only"
    names = {re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", m)[1] for m in route.get("matchers", [])}  # type: ignore[index]
    return names.union(*(matched_labels(child) for child in route.get("routes", [])))


def routed_to(amtool: str, path: Path, labels: dict[str, str]) -> str:
    done = run(amtool, "config", "routes", "test", f"--config.file={path}", *(f"{k}={v}" for k, v in labels.items()))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def test_prods_critical_alerts_page_and_its_warnings_reach_the_chat(tmp_path: Path) -> None:
    """The config as prod's kube-prometheus-stack release sends it, and every alert prod's Prometheus may fire:
    the platform's own and the chart's default rules, as its pinned chart renders them."""
    amtool = amtool_binary()
    settings = prod_alerting()
    rendering = rendered_stack("prod")
    config = _release_inputs(rendering, KUBE_PROMETHEUS_STACK.release)["values"]["alertmanager"]["config"]
    assert config == alerting.alertmanager_config(settings)
    path = written(config, tmp_path / "alertmanager.yaml")
    (rule,) = objects_of(rendering, "PrometheusRule")
    chart_rules = [o for o in chart_objects("prod")[KUBE_PROMETHEUS_STACK.release] if o["kind"] == "PrometheusRule"]
    rules = [r for rule in (rule, *chart_rules) for g in rule_groups(rule) for r in g["rules"] if "alert" in r]
    pager = ",".join(settings.critical)
    assert settings.receiver(settings.critical[0]).pagerduty is not None, "prod pages through PagerDuty first"
    assert {"KubeNodeNotReady", "TargetDown", "Watchdog"} <= {r["alert"] for r in rules}, "the chart's rules are in"
    # Critical alerts page, warnings reach the chat, and the chart's info alerts reach no one (its InfoInhibitor
    # mutes them while nothing worse fires).
    expected = {"critical": pager, "warning": ",".join(settings.warning), "info": alerting.NULL_RECEIVER}
    routed = [r for r in rules if r["labels"]["severity"] in expected]
    assert any(r["labels"]["severity"] == "critical" for r in routed) and any(r["labels"]["severity"] == "warning" for r in routed)
    # amtool answers one label set a call. A route reads only the labels its matchers name, so each alert is routed
    # by those of its labels: every alert is answered for, with one call per distinct set, a few at a time.
    matched = matched_labels(config["route"])
    assert matched == {"alertname", "severity"}, "the routes as rendered"
    label_sets = [{"alertname": r["alert"], **r["labels"]} for r in routed]
    distinct = sorted({tuple(sorted((k, v) for k, v in labels.items() if k in matched)) for labels in label_sets})
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        answers = dict(zip(distinct, pool.map(lambda labels: routed_to(amtool, path, dict(labels)), distinct)))
    receivers = [answers[tuple(sorted((k, v) for k, v in labels.items() if k in matched))] for labels in label_sets]
    assert [(r["alert"], got) for r, got in zip(routed, receivers)] == [(r["alert"], expected[r["labels"]["severity"]]) for r in routed]
    assert {r["labels"]["severity"] for r in rules} == {"critical", "warning", "info", "none"}
    assert routed_to(amtool, path, {"alertname": "TargetDown", "severity": "warning", "namespace": "kube-system"})
    assert routed_to(amtool, path, {"alertname": "Watchdog", "severity": "none"}) == settings.watchdog
    assert routed_to(amtool, path, {"alertname": "InfoInhibitor", "severity": "none"}) == alerting.NULL_RECEIVER


def test_without_receivers_everything_goes_to_null(tmp_path: Path) -> None:
    amtool = amtool_binary()
    path = written(alerting.alertmanager_config(None), tmp_path / "alertmanager.yaml")
    for labels in ({"alertname": "VllmModelDown", "severity": "critical"}, {"alertname": "Watchdog", "severity": "none"}):
        assert routed_to(amtool, path, labels) == alerting.NULL_RECEIVER


def test_amtool_refuses_a_route_to_a_receiver_that_does_not_exist(tmp_path: Path) -> None:
    amtool = amtool_binary()
    config = alerting.alertmanager_config(prod_alerting())
    config["route"]["routes"][2]["receiver"] = "nobody"
    assert run(amtool, "check-config", str(written(config, tmp_path / "alertmanager.yaml"))).returncode != 0


# --- Alertmanager itself: the inhibitions, on the rendered config --------------------------------------------


# Posted after the alerts under test, a pair the test's own inhibition mutes. Alertmanager hands posted alerts to
# its inhibitor in the order they came, one subscription, and works out an alert's mutes when it is listed: once
# the pair's target is listed as muted, the inhibitor has seen every alert posted before it, however busy the
# machine. No poll is trusted for having waited long enough.
CAUGHT_UP_SOURCE, CAUGHT_UP_TARGET = {"alertname": "TestCaughtUpSource"}, {"alertname": "TestCaughtUpTarget"}
CAUGHT_UP_RULE = {"source_matchers": ['alertname="TestCaughtUpSource"'], "target_matchers": ['alertname="TestCaughtUpTarget"']}


def post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels} for labels in alerts]).encode()
    post = urllib.request.Request(f"{url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=LISTED_WITHIN) as answer:
        assert answer.status == 200


def alerts_status(url: str, sent: list[dict[str, str]]) -> dict[tuple[tuple[str, str], ...], list[dict[str, str]]]:
    """Post `sent` to a running Alertmanager whose config has CAUGHT_UP_RULE, then the pair; each alert of `sent`
    with its inhibitors' labels, by its labels, as listed once the inhibitor has caught up."""
    post_alerts(url, sent)
    post_alerts(url, [CAUGHT_UP_SOURCE, CAUGHT_UP_TARGET])
    deadline = time.monotonic() + LISTED_WITHIN
    while True:
        with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=max(deadline - time.monotonic(), 0.01)) as answer:
            listed = json.load(answer)
        by_print = {a["fingerprint"]: a["labels"] for a in listed}
        status = {tuple(sorted(a["labels"].items())): [by_print[f] for f in a["status"]["inhibitedBy"]] for a in listed}
        if status.get(tuple(CAUGHT_UP_TARGET.items())) and len(listed) == len(sent) + 2:
            return {labels: by for labels, by in status.items() if dict(labels)["alertname"] not in (CAUGHT_UP_SOURCE["alertname"], CAUGHT_UP_TARGET["alertname"])}
        if time.monotonic() >= deadline:
            pytest.fail(f"Alertmanager listed {len(listed)} of the {len(sent) + 2} alerts posted, the last not muted, within {LISTED_WITHIN:g} s")
        time.sleep(0.1)


def inhibitions(tmp_path: Path, sent: list[dict[str, str]]) -> dict[tuple[tuple[str, str], ...], list[dict[str, str]]]:
    """alerts_status of `sent` on an Alertmanager on loopback with the rendered config (and CAUGHT_UP_RULE); stopped
    after."""
    binary = tool("alertmanager", "prometheus-alertmanager")
    config = tmp_path / "alertmanager.yaml"
    rendered = alerting.alertmanager_config(None)
    config.write_text(yaml.safe_dump({**rendered, "inhibit_rules": [*rendered["inhibit_rules"], CAUGHT_UP_RULE]}))
    address = f"127.0.0.1:{free_port()}"
    argv = [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}", f"--web.listen-address={address}",
            "--cluster.listen-address="]  # fmt: skip
    with loopback_server(argv, address) as url:
        return alerts_status(url, sent)


def test_alertmanager_mutes_a_nodes_gpu_warnings_and_a_downed_models_symptoms(tmp_path: Path) -> None:
    """The rendered inhibitions on a real Alertmanager: a GPU node not ready mutes that node's GPU warnings (and
    fires before them, where kube-prometheus-stack's KubeNodeNotReady waits 15 minutes), but not its critical
    GPU alerts, which page; a model that is down mutes its symptoms, and its own not-ready alert, the same
    outage paged once; the same alerts elsewhere still go out."""
    model = {"namespace": NAMESPACE, "model": "llama-8b"}
    sent = [
        {"alertname": "NodeWithGpusNotReady", "node": "n1", "severity": "warning"},
        {"alertname": "GpuUnavailable", "node": "n1", "severity": "critical"},
        {"alertname": "GpuFallenOffBus", "node": "n1", "gpu": "0", "UUID": "GPU-0", "severity": "critical"},
        {"alertname": "GpuXidError", "node": "n1", "gpu": "1", "UUID": "GPU-1", "severity": "warning"},
        {"alertname": "GpuXidError", "node": "n2", "gpu": "0", "UUID": "GPU-2", "severity": "warning"},
        {"alertname": "VllmModelDown", "severity": "critical", **model},
        {"alertname": "VllmModelNotReady", "severity": "critical", **model},
        {"alertname": "VllmMetricsMissing", "severity": "warning", **model},
        {"alertname": "VllmMetricsMissing", "severity": "warning", "namespace": NAMESPACE, "model": "qwen-7b"},
        {"alertname": "VllmModelNotReady", "severity": "critical", "namespace": NAMESPACE, "model": "mistral-7b"},
    ]
    status = inhibitions(tmp_path, sent)
    muted = {dict(labels)["alertname"] + "/" + dict(labels).get("node", dict(labels).get("model", "")) for labels, by in status.items() if by}
    assert muted == {"GpuXidError/n1", "VllmMetricsMissing/llama-8b", "VllmModelNotReady/llama-8b"}


def test_no_warning_mutes_a_critical_alert(tmp_path: Path) -> None:
    """Every alert of prod's rule, and kube-prometheus-stack's node-down warnings, all on one node, namespace
    and model, so that every inhibition's `equal` holds: a critical alert is muted by critical ones only (a
    model down, one outage one page), never by a warning, which reaches only the chat."""
    (rule,) = objects_of(rendered_stack("prod"), "PrometheusRule")
    shared = {"namespace": NAMESPACE, "model": "llama-8b", "node": "n1", "gpu": "0", "UUID": "GPU-0", "pod": "p"}
    kube = [{"alertname": name, "severity": "warning"} for name in alerting.NODE_DOWN_ALERTS.split("|")]
    ours = [{"alertname": r["alert"], "severity": r["labels"]["severity"]} for g in rule_groups(rule) for r in g["rules"]]
    sent = list({tuple(sorted(a.items())): {**shared, **a} for a in kube + ours}.values())
    status = inhibitions(tmp_path, sent)
    critical = {labels: by for labels, by in status.items() if dict(labels)["severity"] == "critical"}
    assert len(critical) == len({a["alertname"] for a in ours if a["severity"] == "critical"})
    for labels, by in critical.items():
        assert [b for b in by if b["severity"] != "critical"] == [], (dict(labels)["alertname"], by)
    assert any(by for by in critical.values()), "the model-down inhibition, critical over critical, still holds"
