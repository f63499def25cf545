"""The system node group holds what the platform puts on it: the fit checked at preview, and the table it
sums held to what the charts and the program really run there."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import COMMITTED_STACKS, document_plan, minimal_document, rendered_stack, stack_document, stack_plan
from tests.test_charts import chart_objects, lands_on
from vllm_platform.config import stack_yaml
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.quantities import cpu_millis, memory_mib
from vllm_platform.contract import SYSTEM_NODE_SELECTOR
from vllm_platform.pins import ENVOY_GATEWAY
from vllm_platform.plan import system

DATA = Path(__file__).parent / "data"
CREATED_STACKS = [s for s in COMMITTED_STACKS if stack_plan(s).config.cluster.existing is None]
SYSTEM_NODE_LABELS = {**SYSTEM_NODE_SELECTOR, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def with_system_nodes(document: dict[str, Any], **nodes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    changed["config"]["vllm-platform:cluster"]["systemNodes"] = nodes
    return changed


def test_too_few_system_nodes_are_refused_with_the_numbers_and_the_ways_out() -> None:
    with pytest.raises(ConfigError) as refused:
        document_plan(with_system_nodes(stack_document("prod"), instanceType="m6i.large", minSize=2, maxSize=3))
    (problem,) = refused.value.problems
    assert problem.startswith("cluster.systemNodes: the platform's system pods request 7.87 CPU and 11.0 GiB (Karpenter 2 x 1")
    assert "a rollout surge of the gateway's proxies 1 x 0.76 CPU, ...)" in problem
    assert "more than 2 x m6i.large hold (1.63 CPU and 6.3 GiB each after kube-reserved and the DaemonSets)" in problem
    assert problem.endswith("use minSize 5 (and maxSize 5) or instanceType m6i.2xlarge")
    # The type the message names, at the same count, is accepted.
    document_plan(with_system_nodes(stack_document("prod"), instanceType="m6i.2xlarge", minSize=2, maxSize=3))


def test_a_rollouts_surge_pod_needs_room_too() -> None:
    """Two m6i.xlarge hold dev's pods, but not the gateway proxy's surge pod an update starts beside them: it would
    wait Pending and the proxies' rollout never end. Three hold it."""
    plan = stack_plan("dev")
    pods, node = system.system_pods(plan), system.system_node("m6i.xlarge")
    assert system.packs(pods, node, 2) and not system.packs(system.with_surge(pods), node, 2)
    with pytest.raises(ConfigError) as refused:
        document_plan(with_system_nodes(stack_document("dev"), instanceType="m6i.xlarge", minSize=2, maxSize=3))
    assert refused.value.problems[0].endswith("use minSize 3 or instanceType m6i.2xlarge")
    document_plan(with_system_nodes(stack_document("dev"), instanceType="m6i.xlarge", minSize=3, maxSize=4))
    # The surge is the largest Deployment's pod, never a StatefulSet's, a Job's or Karpenter's.
    (surge,) = [p for p in system.with_surge(pods) if p.name.startswith("a rollout surge of")]
    assert surge.name == "a rollout surge of the gateway's proxies" and surge.count == 1
    assert system.with_surge([p for p in pods if not p.surges]) == [p for p in pods if not p.surges]


def test_memory_counts_too() -> None:
    # Nodes with CPU to spare: two that hold prod's pods' memory with a replica's worth over, and two with a GiB less.
    pods = system.system_pods(stack_plan("prod"))
    memory = sum(p.count * p.memory_mib for p in pods)
    roomy = system.SystemNode(cpu_millis=100_000, memory_mib=memory // 2 + 2048)
    assert system.packs(pods, roomy, 2)
    assert not system.packs(pods, system.SystemNode(cpu_millis=100_000, memory_mib=memory // 2 - 1024), 2)


def test_karpenters_replicas_need_a_node_each() -> None:
    # One m6i.4xlarge holds every pod's requests, but not Karpenter's two replicas, which spread one to a node.
    pods = system.system_pods(stack_plan("dev"))
    node = system.system_node("m6i.4xlarge")
    assert sum(p.count * p.cpu_millis for p in pods) < node.cpu_millis
    assert not system.packs(pods, node, 1)
    assert system.packs(pods, node, 2)


def test_the_default_system_nodes_hold_a_minimal_stack() -> None:
    document_plan(minimal_document())


def test_an_existing_cluster_brings_its_own_system_nodes() -> None:
    document = stack_yaml.load((DATA / "existing-cluster.yaml").read_text())
    assert document_plan(document).config.cluster.existing is not None
    assert system.system_pods(document_plan(document)) and system.system_node_problems(document_plan(document)) == []


def _requests(containers: list[dict[str, Any]]) -> tuple[int, int]:
    cpu = sum(cpu_millis(((c.get("resources") or {}).get("requests") or {}).get("cpu", "0")) for c in containers)
    memory = sum(memory_mib(((c.get("resources") or {}).get("requests") or {}).get("memory", "0")) for c in containers)
    return cpu, memory


def rendered_system_requests(stack: str) -> tuple[int, int]:
    """CPU millicores and MiB the rendered objects ask of the system nodes: every Deployment, StatefulSet and Job
    that may land there (not Helm's hooks, which run before and end), Prometheus and Alertmanager with the
    operator's config reloader, and what Envoy Gateway makes at run time from the rendered EnvoyProxy and
    GatewayConfig: the proxies (with its shutdown manager) and the rate limit Deployment its values ask for."""
    objects = [o for found in chart_objects(stack).values() for o in found] + rendered_stack(stack).manifests()
    # A chart's own ScaledObject (the HTTP add-on's interceptor) holds its Deployment at its minimum.
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o["spec"].get("minReplicaCount", 0) for o in objects if o.get("kind") == "ScaledObject"}
    cpu = memory = 0
    for o in objects:
        kind = o.get("kind")
        if kind in WORKLOADS:
            if "helm.sh/hook" in (o["metadata"].get("annotations") or {}):
                continue
            pod = o["spec"]["template"]["spec"]
            if not lands_on(pod, SYSTEM_NODE_LABELS):
                continue
            count = max(o["spec"].get("replicas", 1), scaled.get(o["metadata"]["name"], 0)) if kind != "Job" else 1
            c, m = _requests(pod["containers"])
        elif kind in ("Prometheus", "Alertmanager"):
            count = o["spec"].get("replicas", 1)
            c, m = _requests([o["spec"], {"resources": {"requests": system.CONFIG_RELOADER.resources()}}])
        elif kind == "EnvoyProxy":
            deployment = o["spec"]["provider"]["kubernetes"]["envoyDeployment"]
            (config,) = [g for g in rendered_stack(stack).manifests() if g["kind"] == "GatewayConfig"]
            count = deployment["replicas"]
            c, m = _requests([deployment["container"], config["spec"]["extProc"]["kubernetes"], {"resources": {"requests": system.SHUTDOWN_MANAGER.resources()}}])
            (eg,) = [r for r in rendered_stack(stack).releases() if r["name"] == ENVOY_GATEWAY.release]
            limit = eg["values"]["config"]["envoyGateway"]["provider"]["kubernetes"]["rateLimitDeployment"]
            rc, rm = _requests([limit["container"]])
            cpu, memory = cpu + limit["replicas"] * rc, memory + limit["replicas"] * rm
        else:
            continue
        cpu, memory = cpu + count * c, memory + count * m
    return cpu, memory


@pytest.mark.parametrize("stack", CREATED_STACKS)
def test_the_table_the_check_sums_is_what_the_stack_runs_on_the_system_nodes(stack: str) -> None:
    pods = [p for p in system.system_pods(stack_plan(stack)) if p.name not in {name for name, _, _ in system.EKS_ADDON_PODS}]
    planned = (sum(p.count * p.cpu_millis for p in pods), sum(p.count * p.memory_mib for p in pods))
    assert rendered_system_requests(stack) == planned
