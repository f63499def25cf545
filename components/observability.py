"""The observability and autoscaling layer: kube-prometheus-stack, KEDA, GPU metrics, dashboard and alerts.

The Helm values are pure functions of the config, tested without Pulumi; `Observability` turns them
into pinned Helm releases plus the dashboard ConfigMap and the PrometheusRule.

Label contract: Prometheus selects every ServiceMonitor, PodMonitor and PrometheusRule in the
namespaces labelled `vllm_spec.MONITOR_SELECTOR_LABELS` (the models' namespace, `monitoring` and
`keda`). A label selector on the monitors themselves cannot work: the chart's own monitors (kubelet,
kube-state-metrics, node exporter) already set `app.kubernetes.io/part-of` to their chart's name,
and selectors cannot OR two values of different keys.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import alerts, dashboards, vllm_spec
from components.config import KEDA_NAMESPACE, MONITORING_NAMESPACE, SERVING_PORT, PlatformConfig
from components.helm import Chart, helm_release
from components.vllm_model import custom_resource

HTTP_SCALER_PORT = 9090
# Where the add-on's scaler reads the interceptor's request counts; pinned so the NetworkPolicy matches.
INTERCEPTOR_ADMIN_PORT = 9090
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER = "admin"


# prometheus-operator v0.93 line, the same as the ServiceMonitor/PrometheusRule CRDs the tests validate against.
KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack", "88.5.0", "https://prometheus-community.github.io/helm-charts",
    vllm_spec.PROMETHEUS_RELEASE, MONITORING_NAMESPACE,
)  # fmt: skip
KEDA = Chart("keda", "2.20.2", "https://kedacore.github.io/charts", "keda", KEDA_NAMESPACE)
# The 0.15 line, the InterceptorRoute API the tests validate against; installed when a model scales to zero.
KEDA_HTTP_ADD_ON = Chart(
    "keda-add-ons-http", "0.15.0", "https://kedacore.github.io/charts", "keda-add-ons-http", KEDA_NAMESPACE
)
DCGM_EXPORTER = Chart(
    "dcgm-exporter", "4.8.2", "https://nvidia.github.io/dcgm-exporter/helm-charts",
    "dcgm-exporter", MONITORING_NAMESPACE,
)  # fmt: skip


def installed_charts(cfg: PlatformConfig) -> list[Chart]:
    """The releases this layer installs: the add-on only for a model at zero, DCGM only where GPUs serve."""
    if not cfg.observability.enabled:
        return []
    return [
        KUBE_PROMETHEUS_STACK,
        KEDA,
        *([DCGM_EXPORTER] if cfg.runs_gpu_metrics else []),
        *([KEDA_HTTP_ADD_ON] if cfg.any_scales_to_zero else []),
    ]


def _requests(cpu: str, memory: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}}


def grafana_service(chart: Chart = KUBE_PROMETHEUS_STACK) -> str:
    """Grafana's chart names its Service `<release>-grafana`."""
    return f"{chart.release}-grafana"


def http_add_on_service(component: str, namespace: str) -> str:
    """The add-on's chart names its Services `<chart name>-<component>`, whatever the release is called."""
    return f"{KEDA_HTTP_ADD_ON.chart}-{component}.{namespace}.svc.cluster.local"


def interceptor_host(namespace: str) -> str:
    return http_add_on_service("interceptor-proxy", namespace)


def http_scaler_address(namespace: str) -> str:
    return f"{http_add_on_service('external-scaler', namespace)}:{HTTP_SCALER_PORT}"


def platform_namespace(name: str, privileged: bool = False) -> dict[str, Any]:
    labels = dict(vllm_spec.MONITOR_SELECTOR_LABELS)
    if privileged:
        # node-exporter and the DCGM exporter read the host (hostPID, hostNetwork, SYS_ADMIN).
        labels["pod-security.kubernetes.io/enforce"] = "privileged"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def monitor_selection() -> dict[str, Any]:
    """prometheusSpec keys that pick the platform's monitors and rules, and nothing the chart assumes."""
    platform_namespaces = {"matchLabels": dict(vllm_spec.MONITOR_SELECTOR_LABELS)}
    selection: dict[str, Any] = {}
    for kind in ("serviceMonitor", "podMonitor", "rule"):
        selection[f"{kind}SelectorNilUsesHelmValues"] = False
        selection[f"{kind}Selector"] = {}
        selection[f"{kind}NamespaceSelector"] = platform_namespaces
    return selection


# Head room on the volume for the WAL and compaction: a full volume crash-loops Prometheus, and KEDA loses its metric.
RETENTION_SIZE_SHARE = 0.85


def retention_size(storage_size: str) -> str:
    """Prometheus' size cap for a volume of `storage_size` (Gi or Ti); its GB are 2^30 bytes, like Gi."""
    gib = int(storage_size[:-2]) * (1024 if storage_size.endswith("Ti") else 1)
    return f"{math.floor(gib * RETENTION_SIZE_SHARE)}GB"


def kube_prometheus_stack_values(cfg: PlatformConfig) -> dict[str, Any]:
    obs = cfg.observability
    grafana: dict[str, Any] = {
        "enabled": obs.grafana_enabled,
        "resources": _requests("100m", "256Mi"),
        "sidecar": {
            "resources": _requests("50m", "128Mi"),
            "dashboards": {
                "enabled": True,
                "label": dashboards.GRAFANA_DASHBOARD_LABEL,
                "labelValue": dashboards.GRAFANA_DASHBOARD_LABEL_VALUE,
            },
        },
    }
    if obs.grafana_enabled:
        # Never the chart's well-known "prom-operator": the password is a Pulumi secret in a Secret of our own.
        grafana["admin"] = {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"}
    return {
        "fullnameOverride": KUBE_PROMETHEUS_STACK.release,
        "prometheusOperator": {
            "resources": _requests("100m", "128Mi"),
            "prometheusConfigReloader": {"resources": _requests("10m", "32Mi")},
            "admissionWebhooks": {"patch": {"resources": _requests("10m", "32Mi")}},
        },
        "prometheus": {
            "prometheusSpec": {
                "retention": obs.prometheus.retention,
                "retentionSize": retention_size(obs.prometheus.storage_size),
                "scrapeInterval": obs.prometheus.scrape_interval,
                "evaluationInterval": obs.prometheus.scrape_interval,
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": obs.prometheus.storage_class_name,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": obs.prometheus.storage_size}},
                        }
                    }
                },
                "resources": _requests("500m", "2Gi"),
                **monitor_selection(),
            }
        },
        "alertmanager": {
            "enabled": obs.alertmanager_enabled,
            "alertmanagerSpec": {"resources": _requests("50m", "128Mi")},
        },
        "grafana": grafana,
        "kube-state-metrics": {"resources": _requests("50m", "128Mi")},
        "prometheus-node-exporter": {"resources": _requests("50m", "64Mi")},
    }


def keda_values() -> dict[str, Any]:
    return {
        "resources": {
            "operator": _requests("100m", "128Mi"),
            "metricServer": _requests("100m", "128Mi"),
            "webhooks": _requests("50m", "64Mi"),
        }
    }


def _requests_and_limits(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    # The chart's values schema wants both cpu and memory wherever requests or limits appear.
    return {**_requests(cpu, memory), "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def http_add_on_values() -> dict[str, Any]:
    return {
        "interceptor": {
            # Clients reach the interceptor through each model's ExternalName Service, which cannot remap
            # ports: it must listen where the models do.
            "proxy": {"port": SERVING_PORT},
            "admin": {"port": INTERCEPTOR_ADMIN_PORT},
            # Two, not the chart's three: every request to a model at zero goes through one of them.
            "replicas": {"min": 2, "max": 10},
            "resources": _requests_and_limits("100m", "64Mi", "1000m", "256Mi"),
        },
        "operator": {"resources": _requests_and_limits("50m", "64Mi", "500m", "128Mi")},
        "scaler": {"resources": _requests_and_limits("50m", "64Mi", "500m", "128Mi")},
    }


def interceptor_network_policy(cfg: PlatformConfig) -> dict[str, Any]:
    """The interceptor forwards to every model at zero: only the models' clients may reach its proxy port,
    or any pod in the cluster could call those models around the models' own NetworkPolicy."""
    callers = sorted({*cfg.client_namespaces, cfg.namespace})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "interceptor-ingress", "namespace": KEDA_NAMESPACE, "labels": dict(vllm_spec.MONITOR_SELECTOR_LABELS)},
        "spec": {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/component": "interceptor", "app.kubernetes.io/instance": KEDA_HTTP_ADD_ON.release}
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": callers}]
                            }
                        }
                    ],
                    "ports": [{"port": SERVING_PORT, "protocol": "TCP"}],
                },
                # The add-on's scaler, beside it in this namespace, polls the request counts.
                {"from": [{"podSelector": {}}], "ports": [{"port": INTERCEPTOR_ADMIN_PORT, "protocol": "TCP"}]},
            ],
        },
    }


def dcgm_exporter_values(cfg: PlatformConfig) -> dict[str, Any]:
    return {
        "fullnameOverride": DCGM_EXPORTER.release,
        "nodeSelector": dict(vllm_spec.GPU_NODE_SELECTOR),
        "tolerations": [
            {"key": vllm_spec.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"},
        ],
        # The embedded DCGM host engine holds per-GPU buffers; 8-GPU nodes need the headroom.
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "serviceMonitor": {
            "enabled": True,
            # No scrapeTimeout: Prometheus then takes the lesser of 10 s and the interval, valid for any interval.
            "interval": cfg.observability.prometheus.scrape_interval,
            # The exporter labels each GPU with the namespace and pod it is allocated to; without
            # honorLabels Prometheus would overwrite them with the exporter pod's own.
            "honorLabels": True,
            "additionalLabels": dict(vllm_spec.MONITOR_SELECTOR_LABELS),
            "relabelings": [
                {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}
            ],
            "metricRelabelings": [],
        },
    }


class Observability(pulumi.ComponentResource):
    """Contract: `prometheus_url` is what every model's KEDA trigger queries; `crd_dependencies`
    are the releases that install the CRDs of ServiceMonitor, PrometheusRule and ScaledObject;
    `outputs` are the stack outputs this layer owns."""

    prometheus_url: pulumi.Output[str]
    http_scaler_address: pulumi.Output[str]
    interceptor_host: pulumi.Output[str]
    crd_dependencies: list[pulumi.Resource]
    outputs: dict[str, Any]

    def __init__(self, name: str, cfg: PlatformConfig, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("vllm-platform:index:Observability", name, None, opts)
        obs = cfg.observability
        # Only a model that scales to zero needs the HTTP add-on; the config refuses one without observability.
        self.http_scaler_address = pulumi.Output.from_input("")
        self.interceptor_host = pulumi.Output.from_input("")
        if not obs.enabled:
            self.prometheus_url = pulumi.Output.from_input(obs.external_prometheus_url or "")
            self.crd_dependencies = []
            self.outputs = {"observability": {"prometheusUrl": self.prometheus_url}}
            self.register_outputs(self.outputs)
            return

        monitoring = self._namespace(platform_namespace(MONITORING_NAMESPACE, privileged=True))
        keda_namespace = self._namespace(platform_namespace(KEDA_NAMESPACE))

        admin_secret: list[pulumi.Resource] = []
        if obs.grafana_enabled:
            admin_secret.append(self._grafana_admin_secret(obs.grafana_admin_password, monitoring))
        stack = self._release(KUBE_PROMETHEUS_STACK, kube_prometheus_stack_values(cfg), [monitoring, *admin_secret])
        keda = self._release(KEDA, keda_values(), [keda_namespace])
        if cfg.runs_gpu_metrics:
            # Its ServiceMonitor needs the prometheus-operator CRDs that the stack installs.
            self._release(DCGM_EXPORTER, dcgm_exporter_values(cfg), [monitoring, stack])

        after_stack = pulumi.ResourceOptions(parent=self, depends_on=[stack])
        custom_resource(alerts.PROMETHEUS_RULE_NAME, alerts.prometheus_rule(cfg, MONITORING_NAMESPACE), after_stack)
        if obs.grafana_enabled:
            board = dashboards.dashboard_config_map(cfg, MONITORING_NAMESPACE)
            k8s.core.v1.ConfigMap(
                dashboards.DASHBOARD_CONFIGMAP, metadata=board["metadata"], data=board["data"], opts=after_stack
            )

        self.prometheus_url = pulumi.Output.all(stack.name, stack.namespace).apply(
            lambda release: vllm_spec.prometheus_url(release[0], release[1])
        )
        self.crd_dependencies = [stack, keda]
        if cfg.any_scales_to_zero:
            # Its own interceptor ScaledObject needs KEDA's CRDs.
            add_on = self._release(KEDA_HTTP_ADD_ON, http_add_on_values(), [keda_namespace, keda])
            policy = interceptor_network_policy(cfg)
            k8s.networking.v1.NetworkPolicy(
                policy["metadata"]["name"], metadata=policy["metadata"], spec=policy["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[keda_namespace]),
            )  # fmt: skip
            self.http_scaler_address = add_on.namespace.apply(http_scaler_address)
            self.interceptor_host = add_on.namespace.apply(interceptor_host)
            self.crd_dependencies.append(add_on)
        self.outputs = {"observability": self._outputs(cfg)}
        self.register_outputs(self.outputs)

    def _namespace(self, manifest: dict[str, Any]) -> k8s.core.v1.Namespace:
        return k8s.core.v1.Namespace(
            manifest["metadata"]["name"], metadata=manifest["metadata"], opts=pulumi.ResourceOptions(parent=self)
        )

    def _grafana_admin_secret(self, configured: Optional[str], monitoring: k8s.core.v1.Namespace) -> k8s.core.v1.Secret:
        """The configured password, or one generated once and kept in the stack's state, both as Pulumi secrets."""
        child = pulumi.ResourceOptions(parent=self)
        password = (
            pulumi.Output.secret(configured)
            if configured
            else random.RandomPassword(GRAFANA_ADMIN_SECRET, length=32, special=False, opts=child).result
        )
        return k8s.core.v1.Secret(
            GRAFANA_ADMIN_SECRET,
            metadata={
                "name": GRAFANA_ADMIN_SECRET,
                "namespace": MONITORING_NAMESPACE,
                "labels": dict(vllm_spec.MONITOR_SELECTOR_LABELS),
            },
            type="Opaque",
            string_data={"admin-user": GRAFANA_ADMIN_USER, "admin-password": password},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[monitoring]),
        )

    def _release(self, chart: Chart, values: dict[str, Any], after: list[pulumi.Resource]) -> k8s.helm.v3.Release:
        return helm_release(chart, values, pulumi.ResourceOptions(parent=self, depends_on=after))

    def _outputs(self, cfg: PlatformConfig) -> dict[str, Any]:
        namespace = MONITORING_NAMESPACE
        outputs: dict[str, Any] = {
            "prometheusUrl": self.prometheus_url,
            "charts": {chart.release: f"{chart.chart} {chart.version}" for chart in installed_charts(cfg)},
        }
        if cfg.any_scales_to_zero:
            outputs["interceptorHost"] = self.interceptor_host
        if cfg.observability.grafana_enabled:
            outputs["grafana"] = {
                "portForward": f"kubectl -n {namespace} port-forward svc/{grafana_service()} 3000:80",
                "adminPassword": f"kubectl -n {namespace} get secret {GRAFANA_ADMIN_SECRET} "
                "-o jsonpath='{.data.admin-password}' | base64 -d",
            }
        return outputs
