"""The observability releases' Helm values, the models' ServiceMonitors, and where Prometheus answers.

Label contract: Prometheus selects every ServiceMonitor, PodMonitor and PrometheusRule in the
namespaces labelled `MONITOR_SELECTOR_LABELS` (the models' namespace, `monitoring` and `keda`). A label
selector on the monitors themselves cannot work: the chart's own monitors (kubelet, kube-state-metrics,
node exporter) already set `app.kubernetes.io/part-of` to their chart's name, and selectors cannot OR
two values of different keys.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from vllm_platform.config.observability import duration_seconds
from vllm_platform.config.quantities import memory_mib
from vllm_platform.contract import (
    COMPONENT_LABEL,
    GPU_NODE_SELECTOR,
    GPU_TAINT,
    INSTANCE_LABEL,
    METRICS_PATH,
    MONITOR_SELECTOR_LABELS,
    MONITORING_NAMESPACE,
    NAME_LABEL,
    SERVING_PORT,
    SERVING_PORT_NAME,
)
from vllm_platform.k8s import alerting, dashboards
from vllm_platform.k8s.network import INTERCEPTOR_ADMIN_PORT
from vllm_platform.k8s.workload import RUN_AS_UID, metadata, selector_labels
from vllm_platform.pins import DCGM_EXPORTER, KARPENTER, KEDA, KEDA_HTTP_ADD_ON, KUBE_PROMETHEUS_STACK, Chart
from vllm_platform.plan import system
from vllm_platform.plan.plans import ModelPlan, Plan

PROMETHEUS_PORT = 9090
HTTP_SCALER_PORT = 9090
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER = "admin"
# Head room on the volume for the WAL and compaction: a full volume crash-loops Prometheus, and KEDA loses its metric.
RETENTION_SIZE_SHARE = 0.85
# EKS runs these in its managed control plane, out of the cluster's reach (etcd, the scheduler, the controller
# manager), or binds their metrics to 127.0.0.1 (the kube-proxy add-on): scraped, they are never up, and the
# chart's absent(up{...}) alerts for them would fire forever. Off, their Services, monitors and rules go too.
EKS_UNSCRAPABLE_COMPONENTS = ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")
# The Grafana chart's dashboard and datasource sidecars (values sidecar.dashboards, sidecar.datasources), each with
# the emptyDir that is its /tmp.
GRAFANA_SIDECAR_TMP = {"dashboards": "sc-dashboard-tmp", "datasources": "sc-datasources-tmp"}
# Grafana's sidecars read the dashboards' and the data sources' ConfigMaps in Grafana's namespace, and nothing else:
# the chart's default ClusterRole would let Grafana read every Secret of the cluster (the HF token, the gateway's
# keys, the receivers'), and its own namespaced Role still the Secrets of the monitoring namespace.
GRAFANA_SIDECAR_ROLE = "grafana-sidecars"
# The DCGM exporter chart writes this scrape timeout unless told otherwise; Prometheus refuses one above the interval.
DCGM_SCRAPE_TIMEOUT_SECONDS = 10


def installed_charts(plan: Plan) -> list[Chart]:
    """The releases the observability layer installs: the add-on only for a model at zero, DCGM only where GPUs serve."""
    if not plan.config.observability.enabled:
        return []
    return [
        KUBE_PROMETHEUS_STACK,
        KEDA,
        *([DCGM_EXPORTER] if plan.runs_gpu_metrics else []),
        *([KEDA_HTTP_ADD_ON] if plan.any_scales_to_zero else []),
    ]


def prometheus_url(release: str = KUBE_PROMETHEUS_STACK.release, namespace: str = MONITORING_NAMESPACE) -> str:
    """The in-cluster address of kube-prometheus-stack's Prometheus Service: fullnameOverride makes it `<release>-prometheus`."""
    return f"http://{release}-prometheus.{namespace}.svc.cluster.local:{PROMETHEUS_PORT}"


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


def service_monitor(plan: Plan, model: ModelPlan) -> dict[str, Any]:
    monitor_metadata = metadata(model)
    monitor_metadata["labels"] = {**monitor_metadata["labels"], **MONITOR_SELECTOR_LABELS}
    endpoint = {"port": SERVING_PORT_NAME, "path": METRICS_PATH, "interval": plan.config.observability.prometheus.scrape_interval}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": monitor_metadata,
        "spec": {
            "selector": {"matchLabels": {**selector_labels(model), COMPONENT_LABEL: "inference"}},
            "namespaceSelector": {"matchNames": [model.namespace]},
            "endpoints": [endpoint],
        },
    }


# The port name of the Karpenter chart's Service (templates/service.yaml).
KARPENTER_METRICS_PORT_NAME = "http-metrics"


def karpenter_service() -> str:
    """The Karpenter chart's Service: its fullname, which is the release's name where that holds the chart's
    (as `karpenter` does); the chart's rendered Service is checked against it."""
    return KARPENTER.release


def karpenter_service_monitor(plan: Plan) -> dict[str, Any]:
    """Karpenter's metrics (its launches, its errors, its NodePools' use), scraped from `monitoring`: Karpenter
    runs in kube-system, which Prometheus does not select, and the chart's own monitor would be made there."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": karpenter_service(), "namespace": MONITORING_NAMESPACE, "labels": dict(MONITOR_SELECTOR_LABELS)},
        "spec": {
            # The chart's selector labels (templates/_helpers.tpl, karpenter.selectorLabels).
            "selector": {"matchLabels": {NAME_LABEL: KARPENTER.chart, INSTANCE_LABEL: KARPENTER.release}},
            "namespaceSelector": {"matchNames": [KARPENTER.namespace]},
            "endpoints": [
                {"port": KARPENTER_METRICS_PORT_NAME, "path": METRICS_PATH, "interval": plan.config.observability.prometheus.scrape_interval}
            ],
        },
    }


def _requests(requests: system.Requests) -> dict[str, Any]:
    return {"requests": requests.resources()}


def _requests_and_memory_limit(requests: system.Requests, memory_limit: str) -> dict[str, Any]:
    # A memory limit keeps a leaking controller from taking the system node; no CPU limit, which would throttle
    # a controller's bursts (a reconcile storm, a scrape) while the node has CPU to spare.
    return {**_requests(requests), "limits": {"memory": memory_limit}}


def _requests_and_limits(requests: system.Requests, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    # The chart's values schema wants both cpu and memory wherever requests or limits appear.
    return {**_requests(requests), "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def grafana_sidecar_role() -> dict[str, Any]:
    """What Grafana's sidecars may read: ConfigMaps in the monitoring namespace, where the dashboards and the data
    sources are; never a Secret."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": GRAFANA_SIDECAR_ROLE, "namespace": MONITORING_NAMESPACE},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
    }


def monitor_selection() -> dict[str, Any]:
    """prometheusSpec keys that pick the platform's monitors and rules, and nothing the chart assumes."""
    platform_namespaces = {"matchLabels": dict(MONITOR_SELECTOR_LABELS)}
    selection: dict[str, Any] = {}
    for kind in ("serviceMonitor", "podMonitor", "rule"):
        selection[f"{kind}SelectorNilUsesHelmValues"] = False
        selection[f"{kind}Selector"] = {}
        selection[f"{kind}NamespaceSelector"] = platform_namespaces
    return selection


def retention_size(storage_size: str) -> str:
    """Prometheus' size cap for a volume of `storage_size`; its GB are 2^30 bytes, like Gi."""
    return f"{math.floor(memory_mib(storage_size) / 1024 * RETENTION_SIZE_SHARE)}GB"


def kube_prometheus_stack_values(plan: Plan, docker_hub_registry: Optional[str] = None) -> dict[str, Any]:
    """`docker_hub_registry`: where Docker Hub's images come from, for Grafana's (the chart's only one there)."""
    obs = plan.config.observability
    grafana: dict[str, Any] = {
        **({"image": {"registry": docker_hub_registry}} if docker_hub_registry else {}),
        "enabled": obs.grafana_enabled,
        "resources": _requests_and_memory_limit(system.GRAFANA, "512Mi"),
        # Above the host's UIDs, not the image's 472: the image leaves its data, log, plugin and provisioning
        # directories writable by any UID, and fsGroup makes the emptyDirs the chart mounts there writable.
        "securityContext": above_host_uids(),
        # A read-only root: Grafana writes its database, plugins and search index only to the chart's emptyDirs
        # (/var/lib/grafana, /var/lib/grafana-search) and logs to the console (the chart's grafana.ini); /tmp, for
        # SQLite's and Go's temporary files, gets an emptyDir of its own.
        "containerSecurityContext": {"readOnlyRootFilesystem": True},
        "extraEmptyDirMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "extraContainerVolumes": [{"name": name, "emptyDir": {}} for name in GRAFANA_SIDECAR_TMP.values()],
        "sidecar": {
            "resources": _requests_and_memory_limit(system.GRAFANA_SIDECAR, "256Mi"),
            # The sidecars write only to the folders they fill, emptyDirs the chart mounts, and Python's
            # tempfile, which finds no writable directory on a read-only root: each gets a /tmp of its own.
            "securityContext": {"readOnlyRootFilesystem": True},
            "dashboards": {
                "enabled": True,
                "label": dashboards.GRAFANA_DASHBOARD_LABEL,
                "labelValue": dashboards.GRAFANA_DASHBOARD_LABEL_VALUE,
                "extraMounts": [{"name": GRAFANA_SIDECAR_TMP["dashboards"], "mountPath": "/tmp"}],
                # kube-prometheus-stack's own default is ALL namespaces; every dashboard of the stack is here.
                "searchNamespace": MONITORING_NAMESPACE,
                "resource": "configmap",
            },
            "datasources": {
                "extraMounts": [{"name": GRAFANA_SIDECAR_TMP["datasources"], "mountPath": "/tmp"}],
                "resource": "configmap",
            },
        },
        # A RoleBinding in Grafana's namespace to the program's Role (grafana_sidecar_role), no ClusterRole.
        "rbac": {"namespaced": True, "useExistingRole": GRAFANA_SIDECAR_ROLE},
    }
    if obs.grafana_enabled:
        # Never the chart's well-known "prom-operator": the password is a Pulumi secret in a Secret of our own.
        grafana["admin"] = {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"}
    return {
        "fullnameOverride": KUBE_PROMETHEUS_STACK.release,
        "prometheusOperator": {
            "resources": _requests_and_memory_limit(system.PROMETHEUS_OPERATOR, "512Mi"),
            "prometheusConfigReloader": {"resources": _requests_and_memory_limit(system.CONFIG_RELOADER, "64Mi")},
            # The certgen jobs only call the API; above the host's UIDs, not the chart's 2000. The chart's
            # seccompProfile stays: Helm merges this map into its own.
            "admissionWebhooks": {
                "patch": {"resources": _requests_and_memory_limit(system.ADMISSION_JOB, "128Mi"), "securityContext": above_host_uids()}
            },
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
                "resources": _requests(system.PROMETHEUS),
                **monitor_selection(),
            }
        },
        "alertmanager": {
            "enabled": obs.alertmanager_enabled,
            # The whole config, replacing the chart's, which sends every alert to `null` (k8s/alerting.py).
            "config": alerting.alertmanager_config(obs.alertmanager),
            "alertmanagerSpec": {
                "resources": _requests(system.ALERTMANAGER),
                **({"secrets": [alerting.RECEIVER_SECRET]} if alerting.secret_values(obs.alertmanager) else {}),
            },
        },
        "grafana": grafana,
        # Without the Secrets collector, which no rule or dashboard reads: the chart then grants no Secret to it.
        "kube-state-metrics": {
            "resources": _requests_and_memory_limit(system.KUBE_STATE_METRICS, "512Mi"),
            "collectorsExclude": ["secrets"],
        },
        "prometheus-node-exporter": {"resources": _requests_and_memory_limit(system.NODE_EXPORTER, "128Mi")},
        **{component: {"enabled": False} for component in EKS_UNSCRAPABLE_COMPONENTS},
    }


def above_host_uids() -> dict[str, Any]:
    """A pod's identity above the host's UIDs, as the models run: no clash with a host user's files."""
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_UID, "runAsGroup": RUN_AS_UID, "fsGroup": RUN_AS_UID}


# The KEDA chart's three workloads, as its values name them.
KEDA_COMPONENTS = ("operator", "metricServer", "webhooks")


def keda_values() -> dict[str, Any]:
    # The operator's, metrics server's and webhooks' own metrics (scaler errors among them), scraped through
    # ServiceMonitors the chart makes: Prometheus selects every monitor in the keda namespace.
    scraped = {"enabled": True, "serviceMonitor": {"enabled": True}}
    return {
        # KEDA's images take any UID (OpenShift gives them random ones); the operator's generated certificates
        # go to an emptyDir, which fsGroup makes writable.
        "podSecurityContext": {component: above_host_uids() for component in KEDA_COMPONENTS},
        "resources": {
            "operator": _requests(system.KEDA_OPERATOR),
            "metricServer": _requests(system.KEDA_METRICS_SERVER),
            "webhooks": _requests(system.KEDA_WEBHOOKS),
        },
        "prometheus": {component: scraped for component in KEDA_COMPONENTS},
    }


def http_add_on_values() -> dict[str, Any]:
    return {
        # The add-on's three Go binaries write nothing but to stdout.
        "podSecurityContext": {**above_host_uids(), "seccompProfile": {"type": "RuntimeDefault"}},
        "interceptor": {
            # Clients reach the interceptor through each model's ExternalName Service, which cannot remap
            # ports: it must listen where the models do.
            "proxy": {"port": SERVING_PORT},
            "admin": {"port": INTERCEPTOR_ADMIN_PORT},
            # Two, not the chart's three: every request to a model at zero goes through one of them.
            "replicas": {"min": system.HTTP_INTERCEPTOR_MIN_REPLICAS, "max": 10},
            "resources": _requests_and_limits(system.HTTP_INTERCEPTOR, "1000m", "256Mi"),
        },
        "operator": {"resources": _requests_and_limits(system.HTTP_OPERATOR, "500m", "128Mi")},
        "scaler": {"replicas": system.HTTP_SCALER_REPLICAS, "resources": _requests_and_limits(system.HTTP_SCALER, "500m", "128Mi")},
    }


def dcgm_exporter_values(plan: Plan) -> dict[str, Any]:
    interval = plan.config.observability.prometheus.scrape_interval
    # Below the chart's 10 s (the config takes 5 s to 5 m) the timeout is the interval itself, written as the
    # config wrote it: 7500ms stays 7500ms, which the operator's duration pattern takes, where 7.5s would be refused.
    timeout = interval if duration_seconds(interval) < DCGM_SCRAPE_TIMEOUT_SECONDS else f"{DCGM_SCRAPE_TIMEOUT_SECONDS}s"
    return {
        "fullnameOverride": DCGM_EXPORTER.release,
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [GPU_TAINT.any_value_toleration()],
        # The embedded DCGM host engine holds per-GPU buffers; 8-GPU nodes need the headroom. No CPU limit:
        # null drops the chart's default 200m, which throttles the exporter on 8-GPU nodes.
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": None, "memory": "1Gi"}},
        "serviceMonitor": {
            "enabled": True,
            "interval": interval,
            # The chart always writes a timeout; above the interval, the operator refuses the whole monitor.
            "scrapeTimeout": timeout,
            # The exporter labels each GPU with the namespace and pod it is allocated to; without
            # honorLabels Prometheus would overwrite them with the exporter pod's own.
            "honorLabels": True,
            "additionalLabels": dict(MONITOR_SELECTOR_LABELS),
            "relabelings": [
                {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}
            ],
            "metricRelabelings": [],
        },
    }
