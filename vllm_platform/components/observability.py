"""Observability: kube-prometheus-stack, KEDA, GPU metrics, the dashboard and the alerts, as pinned Helm releases
and objects of the platform's own; the values and manifests come from `vllm_platform.k8s`."""

from __future__ import annotations

from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from vllm_platform.components.helm import helm_release
from vllm_platform.components.model import custom_resource
from vllm_platform.contract import KEDA_NAMESPACE, MONITOR_SELECTOR_LABELS, MONITORING_NAMESPACE
from vllm_platform.k8s import alerting, alerts, dashboards
from vllm_platform.k8s.monitoring import (
    GRAFANA_ADMIN_SECRET,
    GRAFANA_ADMIN_USER,
    dcgm_exporter_values,
    grafana_service,
    grafana_sidecar_role,
    http_add_on_values,
    http_scaler_address,
    installed_charts,
    interceptor_host,
    karpenter_service_monitor,
    keda_values,
    kube_prometheus_stack_values,
    prometheus_url,
)
from vllm_platform.k8s.network import interceptor_network_policy, platform_namespace
from vllm_platform.pins import DCGM_EXPORTER, KEDA, KEDA_HTTP_ADD_ON, KUBE_PROMETHEUS_STACK, Chart
from vllm_platform.plan.plans import Plan


class Observability(pulumi.ComponentResource):
    """Contract: `prometheus_url` is what every model's KEDA trigger queries; `crd_dependencies`
    are the releases that install the CRDs of ServiceMonitor, PrometheusRule and ScaledObject;
    `outputs` are the stack outputs this layer owns."""

    prometheus_url: pulumi.Output[str]
    http_scaler_address: pulumi.Output[str]
    interceptor_host: pulumi.Output[str]
    crd_dependencies: list[pulumi.Resource]
    outputs: dict[str, Any]

    def __init__(
        self, name: str, plan: Plan, docker_hub_registry: Optional[str] = None, opts: Optional[pulumi.ResourceOptions] = None
    ):
        super().__init__("vllm-platform:index:Observability", name, None, opts)
        obs = plan.config.observability
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

        # What the release reads as it installs: its Secrets, and the Role its Grafana binds to.
        before_stack: list[pulumi.Resource] = []
        if obs.grafana_enabled:
            before_stack.append(self._grafana_admin_secret(obs.grafana_admin_password, monitoring))
            role = grafana_sidecar_role()
            before_stack.append(
                k8s.rbac.v1.Role(
                    role["metadata"]["name"], metadata=role["metadata"], rules=role["rules"],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[monitoring]),
                )
            )  # fmt: skip
        receiver_keys = alerting.secret_values(obs.alertmanager)
        if obs.alertmanager_enabled and receiver_keys:
            before_stack.append(self._receiver_secret(receiver_keys, monitoring))
        stack = self._release(KUBE_PROMETHEUS_STACK, kube_prometheus_stack_values(plan, docker_hub_registry), [monitoring, *before_stack])
        keda = self._release(KEDA, keda_values(), [keda_namespace])
        if plan.runs_gpu_metrics:
            # Its ServiceMonitor needs the prometheus-operator CRDs that the stack installs.
            self._release(DCGM_EXPORTER, dcgm_exporter_values(plan), [monitoring, stack])

        after_stack = pulumi.ResourceOptions(parent=self, depends_on=[stack])
        custom_resource(alerts.PROMETHEUS_RULE_NAME, alerts.prometheus_rule(plan, MONITORING_NAMESPACE), after_stack)
        if plan.runs_karpenter:
            monitor = karpenter_service_monitor(plan)
            custom_resource(f"{monitor['metadata']['name']}-monitor", monitor, after_stack)
        if obs.grafana_enabled:
            board = dashboards.dashboard_config_map(plan, MONITORING_NAMESPACE)
            k8s.core.v1.ConfigMap(
                dashboards.DASHBOARD_CONFIGMAP, metadata=board["metadata"], data=board["data"], opts=after_stack
            )

        self.prometheus_url = pulumi.Output.all(stack.name, stack.namespace).apply(
            lambda release: prometheus_url(release[0], release[1])
        )
        self.crd_dependencies = [stack, keda]
        if plan.any_scales_to_zero:
            # Its own interceptor ScaledObject needs KEDA's CRDs.
            add_on = self._release(KEDA_HTTP_ADD_ON, http_add_on_values(), [keda_namespace, keda])
            policy = interceptor_network_policy(plan)
            k8s.networking.v1.NetworkPolicy(
                policy["metadata"]["name"], metadata=policy["metadata"], spec=policy["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[keda_namespace]),
            )  # fmt: skip
            self.http_scaler_address = add_on.namespace.apply(http_scaler_address)
            self.interceptor_host = add_on.namespace.apply(interceptor_host)
            self.crd_dependencies.append(add_on)
        self.outputs = {"observability": self._outputs(plan)}
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
                "labels": dict(MONITOR_SELECTOR_LABELS),
            },
            type="Opaque",
            string_data={"admin-user": GRAFANA_ADMIN_USER, "admin-password": password},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[monitoring]),
        )

    def _receiver_secret(self, keys: dict[str, str], monitoring: k8s.core.v1.Namespace) -> k8s.core.v1.Secret:
        """The receivers' keys and URLs, as Pulumi secrets, for Alertmanager to read as files."""
        return k8s.core.v1.Secret(
            alerting.RECEIVER_SECRET,
            metadata={
                "name": alerting.RECEIVER_SECRET,
                "namespace": MONITORING_NAMESPACE,
                "labels": dict(MONITOR_SELECTOR_LABELS),
            },
            type="Opaque",
            string_data={key: pulumi.Output.secret(value) for key, value in keys.items()},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[monitoring]),
        )

    def _release(self, chart: Chart, values: dict[str, Any], after: list[pulumi.Resource]) -> k8s.helm.v3.Release:
        return helm_release(chart, values, pulumi.ResourceOptions(parent=self, depends_on=after))

    def _outputs(self, plan: Plan) -> dict[str, Any]:
        namespace = MONITORING_NAMESPACE
        outputs: dict[str, Any] = {
            "prometheusUrl": self.prometheus_url,
            "charts": {chart.release: f"{chart.chart} {chart.version}" for chart in installed_charts(plan)},
        }
        if plan.any_scales_to_zero:
            outputs["interceptorHost"] = self.interceptor_host
        if plan.config.observability.grafana_enabled:
            outputs["grafana"] = {
                "portForward": f"kubectl -n {namespace} port-forward svc/{grafana_service()} 3000:80",
                "adminPassword": f"kubectl -n {namespace} get secret {GRAFANA_ADMIN_SECRET} "
                "-o jsonpath='{.data.admin-password}' | base64 -d",
            }
        return outputs
