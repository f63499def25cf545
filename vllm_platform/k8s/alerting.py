"""Pure builder of Alertmanager's configuration: routes by severity, the dead man's switch, inhibitions,
and receivers that read their keys from files of a Secret.

It replaces kube-prometheus-stack's default, which sends every alert, critical ones included, to its
`null` receiver. The keys and URLs never enter the Helm values: each receiver names a file under
`/etc/alertmanager/secrets/<secret>/`, where the operator mounts the Secret `RECEIVER_SECRET`
(`alertmanagerSpec.secrets`). Alertmanager reads such a file on every notification.
"""

from __future__ import annotations

from typing import Any, Optional

from vllm_platform.config.alerting import RESERVED_RECEIVERS, Alerting, Receiver, ReceiverKind

RECEIVER_SECRET = "alertmanager-receivers"
SECRETS_DIRECTORY = f"/etc/alertmanager/secrets/{RECEIVER_SECRET}"
(NULL_RECEIVER,) = RESERVED_RECEIVERS
# kube-prometheus-stack's always-firing alert, and its helper that mutes info alerts.
WATCHDOG, INFO_INHIBITOR = "Watchdog", "InfoInhibitor"
# Often enough for a heartbeat that pages after 15 minutes without one.
WATCHDOG_REPEAT = "5m"
CRITICAL_REPEAT = "4h"
DEFAULT_REPEAT = "12h"
GROUP_BY = ["alertname", "namespace", "model", "node"]
# kube-prometheus-stack's alerts for a node that is gone, and the platform's: its GPUs' warnings are
# consequences, not news. All three are warnings, and a warning never mutes a page (inhibit_rules).
NODE_DOWN_ALERTS = "KubeNodeNotReady|KubeNodeUnreachable|NodeWithGpusNotReady"
GPU_ALERTS = "Gpu.+"
# A model without any serving pod: every partial symptom of it is a consequence.
MODEL_OUTAGE, MODEL_NOT_READY = "VllmModelDown", "VllmModelNotReady"
MODEL_DOWN_ALERTS = f"{MODEL_OUTAGE}|{MODEL_NOT_READY}"
MODEL_SYMPTOM_ALERTS = (
    "VllmReplicasUnavailable|VllmMetricsMissing|VllmContainerCrashLooping|KedaScalerErrors"
    "|VllmTimeToFirstToken.+|VllmInterTokenLatencyHigh|VllmRequestLatencyHigh|VllmServerErrors"
)
# Each receiver kind: Alertmanager's config list, the secret field's file key, and our field holding it.
SECRET_FIELDS = {
    ReceiverKind.PAGERDUTY: ("pagerduty_configs", "routing_key_file", "routing_key"),
    ReceiverKind.SLACK: ("slack_configs", "api_url_file", "api_url"),
    ReceiverKind.WEBHOOK: ("webhook_configs", "url_file", "url"),
}


def secret_key(receiver: Receiver) -> str:
    """The key of the receiver's secret in RECEIVER_SECRET: `<receiver>-<field>`, such as pager-routing-key."""
    _, _, field = SECRET_FIELDS[receiver.kind]
    return f"{receiver.name}-{field.replace('_', '-')}"


def secret_values(alerting: Optional[Alerting]) -> dict[str, str]:
    """RECEIVER_SECRET's data: each receiver's key or URL, by secret_key. Empty when no receiver has one."""
    values = {}
    for receiver in alerting.receivers if alerting else []:
        if receiver.kind in SECRET_FIELDS:
            _, _, field = SECRET_FIELDS[receiver.kind]
            values[secret_key(receiver)] = getattr(getattr(receiver, receiver.kind), field)
    return values


def _receiver(receiver: Receiver) -> dict[str, Any]:
    if receiver.kind is ReceiverKind.SNS:
        assert receiver.sns is not None
        # No keys: the AWS SDK's default chain finds the Pod Identity role (components/cluster.py).
        sns = {"topic_arn": receiver.sns.topic_arn, "sigv4": {"region": receiver.sns.region}, "send_resolved": True}
        return {"name": receiver.name, "sns_configs": [sns]}
    config_list, file_field, _ = SECRET_FIELDS[receiver.kind]
    entry: dict[str, Any] = {file_field: f"{SECRETS_DIRECTORY}/{secret_key(receiver)}", "send_resolved": True}
    if receiver.slack is not None and receiver.slack.channel:
        entry["channel"] = receiver.slack.channel
    return {"name": receiver.name, config_list: [entry]}


def _matching(name: str) -> list[str]:
    return [f'alertname = "{name}"']


def routes(alerting: Optional[Alerting]) -> list[dict[str, Any]]:
    """Watchdog first, on its own, so that the heartbeat reaches no human; then every receiver of each
    severity in turn (`continue` on all but the last, so each of them gets the alert)."""
    watchdog = alerting.watchdog if alerting and alerting.watchdog else NULL_RECEIVER
    tree: list[dict[str, Any]] = [
        {"matchers": _matching(WATCHDOG), "receiver": watchdog, "group_wait": "0s", "group_interval": "1m",
         "repeat_interval": WATCHDOG_REPEAT},
        {"matchers": _matching(INFO_INHIBITOR), "receiver": NULL_RECEIVER},
    ]  # fmt: skip
    for severity, names, repeat in (
        ("critical", alerting.critical if alerting else [], CRITICAL_REPEAT),
        ("warning", alerting.warning if alerting else [], DEFAULT_REPEAT),
    ):
        for index, name in enumerate(names):
            route: dict[str, Any] = {"matchers": [f'severity = "{severity}"'], "receiver": name, "repeat_interval": repeat}
            if index < len(names) - 1:
                route["continue"] = True
            tree.append(route)
    return tree


def inhibit_rules() -> list[dict[str, Any]]:
    return [
        # kube-prometheus-stack's own: a critical alert mutes the warning of the same name, and so on down.
        {"source_matchers": ['severity = "critical"'], "target_matchers": ['severity =~ "warning|info"'],
         "equal": ["namespace", "alertname"]},
        {"source_matchers": ['severity = "warning"'], "target_matchers": ['severity = "info"'],
         "equal": ["namespace", "alertname"]},
        {"source_matchers": _matching(INFO_INHIBITOR), "target_matchers": ['severity = "info"'], "equal": ["namespace"]},
        {"target_matchers": _matching(INFO_INHIBITOR)},
        # Only the node's GPU warnings: a GPU gone with its node (GpuUnavailable, GpuFallenOffBus) pages, since
        # the node-down alerts are warnings that reach the chat alone. Making NodeWithGpusNotReady critical
        # instead would page within 2 minutes for a node briefly not Ready (a kubelet restart, an instance
        # being terminated), while GpuUnavailable pages only for GPUs missing 10 minutes.
        {"source_matchers": [f'alertname =~ "{NODE_DOWN_ALERTS}"'],
         "target_matchers": [f'alertname =~ "{GPU_ALERTS}"', 'severity = "warning"'], "equal": ["node"]},
        {"source_matchers": [f'alertname =~ "{MODEL_DOWN_ALERTS}"'],
         "target_matchers": [f'alertname =~ "{MODEL_SYMPTOM_ALERTS}"'], "equal": ["namespace", "model"]},
        # A model that served and lost every pod: once the not-ready alert's longer `for` runs out, it tells the
        # outage VllmModelDown already paged, which fires until a pod serves again (k8s/alerts.py). Both
        # critical: the severity rule above does not mute it.
        {"source_matchers": _matching(MODEL_OUTAGE), "target_matchers": _matching(MODEL_NOT_READY),
         "equal": ["namespace", "model"]},
    ]  # fmt: skip


def alertmanager_config(alerting: Optional[Alerting]) -> dict[str, Any]:
    """The whole alertmanager.yaml; with no `alerting`, every alert still goes to `null`, but the node and
    model inhibitions hold, and the config is the one a receiver is later added to."""
    receivers = [{"name": NULL_RECEIVER}, *(_receiver(r) for r in (alerting.receivers if alerting else []))]
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": NULL_RECEIVER,
            "group_by": GROUP_BY,
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": DEFAULT_REPEAT,
            "routes": routes(alerting),
        },
        "inhibit_rules": inhibit_rules(),
        "receivers": receivers,
        "templates": ["/etc/alertmanager/config/*.tmpl"],
    }


def sns_topics(alerting: Optional[Alerting]) -> list[str]:
    return sorted({r.sns.topic_arn for r in (alerting.receivers if alerting else []) if r.sns is not None})
