"""What the system node group must hold: every pod the platform puts on it, with the requests the builders set
(they read them from here), and the fit of those pods on `systemNodes.minSize` nodes, checked at preview.

Nothing scales the system group (Karpenter launches GPU nodes only, and runs on this group itself), so a pod that
does not fit stays Pending and the Helm release that waits for it fails the update after its timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vllm_platform.catalog import kube_reserved_cpu_millis, size_vcpus
from vllm_platform.config.cluster import KARPENTER_REPLICAS, MAX_SYSTEM_GROUP_SIZE
from vllm_platform.config.quantities import cpu_millis, memory_mib
from vllm_platform.plan.plans import Plan


@dataclass(frozen=True)
class Requests:
    """A container's requests, as its manifest writes them."""

    cpu: str
    memory: str

    def resources(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory}


# The platform's containers on the system nodes. Each builder sets its container's requests from here.
KARPENTER_CONTROLLER = Requests("1", "1Gi")
LOAD_BALANCER_CONTROLLER = Requests("100m", "128Mi")
KEDA_OPERATOR = Requests("100m", "128Mi")
KEDA_METRICS_SERVER = Requests("100m", "128Mi")
KEDA_WEBHOOKS = Requests("50m", "64Mi")
HTTP_INTERCEPTOR = Requests("100m", "64Mi")
HTTP_OPERATOR = Requests("50m", "64Mi")
HTTP_SCALER = Requests("50m", "64Mi")
PROMETHEUS = Requests("500m", "2Gi")
# The operator's sidecar in the Prometheus and Alertmanager pods.
CONFIG_RELOADER = Requests("10m", "32Mi")
ALERTMANAGER = Requests("50m", "128Mi")
PROMETHEUS_OPERATOR = Requests("100m", "128Mi")
KUBE_STATE_METRICS = Requests("50m", "128Mi")
GRAFANA = Requests("100m", "256Mi")
# Grafana's two sidecars, which load the dashboards and the data sources.
GRAFANA_SIDECAR = Requests("50m", "128Mi")
NODE_EXPORTER = Requests("50m", "64Mi")
ENVOY_GATEWAY = Requests("100m", "256Mi")
RATE_LIMIT = Requests("100m", "128Mi")
RATE_LIMIT_REDIS = Requests("100m", "128Mi")
AI_GATEWAY_CONTROLLER = Requests("100m", "128Mi")
ENVOY_PROXY = Requests("500m", "512Mi")
# The extproc AI Gateway injects beside each proxy, and Envoy Gateway's shutdown manager there (its defaults,
# DefaultShutdownManager*ResourceRequests in api/v1alpha1/shared_types.go, v1.9.0).
EXTPROC = Requests("250m", "256Mi")
SHUTDOWN_MANAGER = Requests("10m", "32Mi")
STAGING_JOB = Requests("500m", "512Mi")
# The Prometheus operator's admission certificate Jobs, Helm hooks that run before the release's pods and end:
# not counted in the fit.
ADMISSION_JOB = Requests("10m", "32Mi")

# Replicas the builders set, where the plan does not decide them.
CONTROLLER_REPLICAS = 2
HTTP_INTERCEPTOR_MIN_REPLICAS = 2
# keda-add-ons-http 0.15.0's default for its scaler, which the values leave as it is.
HTTP_SCALER_REPLICAS = 3

# The EKS add-ons' own pods, which the program installs but whose requests are the add-ons' defaults (read
# 2026-12: CoreDNS's EKS manifest, 100m/70Mi; the aws-ebs-csi-driver chart, 10m/40Mi in each of the controller's
# six containers; the metrics-server chart, 100m/200Mi), with two replicas each, counted high for metrics-server.
EKS_ADDON_PODS = (("CoreDNS", 2, Requests("100m", "70Mi")), ("EBS CSI controller", 2, Requests("60m", "240Mi")),
                  ("metrics-server", 2, Requests("100m", "200Mi")))  # fmt: skip
# Every system node's DaemonSets besides the node exporter: aws-node (25m) and its network policy agent,
# kube-proxy (100m), the Pod Identity agent and the EBS CSI node plugin (30m/120Mi), rounded up for those
# that publish no requests.
EKS_DAEMONSETS = Requests("250m", "384Mi")
EVICTION_HARD_MEMORY_MIB = 100
# GiB per vCPU of the families whose size alone tells their memory: general purpose (m, and t from large up),
# compute (c) and memory optimised (r). Another family is checked on CPU only.
MEMORY_GIB_PER_VCPU = {"m": 4, "t": 4, "c": 2, "r": 8}
# What the kubelet has of an instance's nominal memory: Karpenter's own estimate (settings.vmMemoryOverheadPercent,
# 0.075 by default in v1.14), as a node reports somewhat less memory than its type's name.
VM_MEMORY_OVERHEAD = 0.075
# The EKS AMI's max pods by size (eni-max-pods.txt, for m5 and m6i; c and r alike), for its kube-reserved memory.
MAX_PODS_BY_VCPUS = ((2, 29), (8, 58), (48, 234), (96, 737))


@dataclass(frozen=True)
class SystemPod:
    name: str
    count: int
    containers: tuple[Requests, ...]
    # Karpenter's replicas spread one to a node (its chart's required anti-affinity).
    one_per_node: bool = False
    # A Deployment that rolls with a surge (Kubernetes' default maxSurge, 25%: one pod for these counts) runs one
    # pod more while it updates. Not Karpenter's (maxUnavailable 1, and a surge pod would find no node of its
    # own), nor the StatefulSets' and Jobs'.
    surges: bool = True

    @property
    def cpu_millis(self) -> int:
        return sum(cpu_millis(c.cpu) for c in self.containers)

    @property
    def memory_mib(self) -> int:
        return sum(memory_mib(c.memory) for c in self.containers)


def system_pods(plan: Plan) -> list[SystemPod]:
    """Every pod the stack puts on a created cluster's system nodes, with how many of it run at once."""
    obs, gateway = plan.config.observability, plan.gateway
    pods = [
        SystemPod("Karpenter", KARPENTER_REPLICAS, (KARPENTER_CONTROLLER,), one_per_node=True, surges=False),
        SystemPod("KEDA operator", 1, (KEDA_OPERATOR,)),
        SystemPod("KEDA metrics server", 1, (KEDA_METRICS_SERVER,)),
        SystemPod("KEDA webhooks", 1, (KEDA_WEBHOOKS,)),
        *(SystemPod(name, count, (requests,)) for name, count, requests in EKS_ADDON_PODS),
    ]
    if obs.enabled:
        pods += [
            SystemPod("Prometheus", 1, (PROMETHEUS, CONFIG_RELOADER), surges=False),
            SystemPod("Prometheus operator", 1, (PROMETHEUS_OPERATOR,)),
            SystemPod("kube-state-metrics", 1, (KUBE_STATE_METRICS,)),
        ]
        if obs.alertmanager_enabled:
            pods.append(SystemPod("Alertmanager", 1, (ALERTMANAGER, CONFIG_RELOADER), surges=False))
        if obs.grafana_enabled:
            pods.append(SystemPod("Grafana", 1, (GRAFANA, GRAFANA_SIDECAR, GRAFANA_SIDECAR)))
    if plan.any_scales_to_zero:
        pods += [
            SystemPod("HTTP add-on interceptor", HTTP_INTERCEPTOR_MIN_REPLICAS, (HTTP_INTERCEPTOR,)),
            SystemPod("HTTP add-on operator", 1, (HTTP_OPERATOR,)),
            SystemPod("HTTP add-on scaler", HTTP_SCALER_REPLICAS, (HTTP_SCALER,)),
        ]
    if gateway is not None:
        pods += [
            SystemPod("the gateway's proxies", gateway.replicas, (ENVOY_PROXY, EXTPROC, SHUTDOWN_MANAGER)),
            SystemPod("Envoy Gateway", CONTROLLER_REPLICAS, (ENVOY_GATEWAY,)),
            SystemPod("AI Gateway controller", CONTROLLER_REPLICAS, (AI_GATEWAY_CONTROLLER,)),
            SystemPod("rate limit", CONTROLLER_REPLICAS, (RATE_LIMIT,)),
            SystemPod("rate limit Redis", 1, (RATE_LIMIT_REDIS,)),
        ]
        if gateway.load_balanced:
            pods.append(SystemPod("AWS Load Balancer Controller", CONTROLLER_REPLICAS, (LOAD_BALANCER_CONTROLLER,)))
    # `pulumi up` runs every model's staging Job at once, and waits for them.
    staged = sum(1 for m in plan.models if m.weights.staging is not None)
    if staged:
        pods.append(SystemPod("staging Jobs", staged, (STAGING_JOB,), surges=False))
    return pods


@dataclass(frozen=True)
class SystemNode:
    """What one system node leaves for the pods above, after kube-reserved, eviction and its DaemonSets."""

    cpu_millis: int
    memory_mib: Optional[int]


def system_node(instance_type: str) -> Optional[SystemNode]:
    """None where the type's name does not tell its vCPUs (medium, metal)."""
    vcpus = size_vcpus(instance_type)
    if vcpus is None:
        return None
    daemonsets_cpu = cpu_millis(EKS_DAEMONSETS.cpu) + cpu_millis(NODE_EXPORTER.cpu)
    cpu = vcpus * 1000 - kube_reserved_cpu_millis(vcpus) - daemonsets_cpu
    per_vcpu = MEMORY_GIB_PER_VCPU.get(instance_type[0])
    if per_vcpu is None:
        return SystemNode(cpu, None)
    max_pods = next((pods for most, pods in MAX_PODS_BY_VCPUS if vcpus <= most), MAX_PODS_BY_VCPUS[-1][1])
    kube_reserved = 255 + 11 * max_pods
    daemonsets_memory = memory_mib(EKS_DAEMONSETS.memory) + memory_mib(NODE_EXPORTER.memory)
    capacity = int(vcpus * per_vcpu * 1024 * (1 - VM_MEMORY_OVERHEAD))
    return SystemNode(cpu, capacity - kube_reserved - EVICTION_HARD_MEMORY_MIB - daemonsets_memory)


def packs(pods: list[SystemPod], node: SystemNode, nodes: int) -> bool:
    """Whether the pods fit `nodes` such nodes, placed largest first on the first node with room (what the
    scheduler's spread does no better than): every replica needs one node with both its CPU and its memory."""
    free = [[node.cpu_millis, node.memory_mib if node.memory_mib is not None else float("inf")] for _ in range(nodes)]
    replicas = sorted(((pod, replica) for pod in pods for replica in range(pod.count)), key=lambda r: -r[0].cpu_millis)
    for pod, replica in replicas:
        # One replica to a node for Karpenter's: its replica n goes on node n or later.
        candidates = range(replica, nodes) if pod.one_per_node else range(nodes)
        spot = next((i for i in candidates if free[i][0] >= pod.cpu_millis and free[i][1] >= pod.memory_mib), None)
        if spot is None:
            return False
        free[spot][0] -= pod.cpu_millis
        free[spot][1] -= pod.memory_mib
    return True


def with_surge(pods: list[SystemPod]) -> list[SystemPod]:
    """The pods, and the largest surge pod beside them: an update (a chart bump, a changed EnvoyProxy) must find
    room for it, or it waits Pending and the rollout never ends. One at a time, as `pulumi up` rolls them."""
    surging = [p for p in pods if p.surges]
    if not surging:
        return pods
    largest = max(surging, key=lambda p: (p.cpu_millis, p.memory_mib))
    return [*pods, SystemPod(f"a rollout surge of {largest.name}", 1, largest.containers, surges=False)]


def system_node_problems(plan: Plan) -> list[str]:
    """Why the system pods, and a rollout's surge pod, cannot all run on `systemNodes.minSize` nodes, with the
    numbers and the ways out."""
    if plan.config.cluster.existing is not None:
        return []
    nodes = plan.config.cluster.system_nodes
    node = system_node(nodes.instance_type)
    pods = with_surge(system_pods(plan))
    if node is None or packs(pods, node, nodes.min_size):
        return []
    cpu = sum(p.count * p.cpu_millis for p in pods)
    memory = sum(p.count * p.memory_mib for p in pods)
    largest = sorted(pods, key=lambda p: -p.count * p.cpu_millis)[:4]
    listed = ", ".join(f"{p.name} {p.count} x {cores(p.cpu_millis)}" for p in largest)
    room = f"{cores(node.cpu_millis)} CPU" + (f" and {node.memory_mib / 1024:.1f} GiB" if node.memory_mib is not None else "")
    ways = []
    enough = next((n for n in range(nodes.min_size + 1, MAX_SYSTEM_GROUP_SIZE + 1) if packs(pods, node, n)), None)
    if enough is not None:
        ways.append(f"minSize {enough}" + (f" (and maxSize {enough})" if enough > nodes.max_size else ""))
    larger = next((t for t in larger_sizes(nodes.instance_type) if packs(pods, system_node(t) or node, nodes.min_size)), None)
    if larger is not None:
        ways.append(f"instanceType {larger}")
    return [
        f"cluster.systemNodes: the platform's system pods request {cores(cpu)} CPU and {memory / 1024:.1f} GiB "
        f"({listed} CPU, ...), more than {nodes.min_size} x {nodes.instance_type} hold ({room} each after kube-reserved "
        f"and the DaemonSets); nothing scales the system group, so they would stay Pending: use "
        f"{' or '.join(ways) or 'a larger instance type'}"
    ]


def cores(millis: int) -> str:
    return f"{millis / 1000:g}"


def larger_sizes(instance_type: str) -> list[str]:
    """The same family's larger sizes whose names tell their vCPUs, smallest first (m6i.large: m6i.xlarge, ...)."""
    family, _, size = instance_type.partition(".")
    vcpus = size_vcpus(instance_type) or 0
    sizes = ["large", "xlarge", *(f"{n}xlarge" for n in (2, 4, 8, 12, 16, 24))]
    return [f"{family}.{s}" for s in sizes if (size_vcpus(f"{family}.{s}") or 0) > vcpus]
