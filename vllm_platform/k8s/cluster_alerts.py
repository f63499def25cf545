"""The PrometheusRule's alerts on what the models run on: GPU health from DCGM and the kubelet, and
Karpenter's launches; and the builder every alert of the rule (k8s/alerts.py's too) is written with.

A GPU alert is aggregated to `node`, `gpu` and `UUID`, so that a GPU whose pod changes stays one alert.
"""

from __future__ import annotations

from typing import Any

from vllm_platform.contract import GPU_RESOURCE, NAME_LABEL
from vllm_platform.k8s.monitoring import karpenter_service
from vllm_platform.pins import KARPENTER

# Xid 79: "GPU has fallen off the bus" in NVIDIA's Xid catalogue; the GPU is gone until the node reboots.
XID_FALLEN_OFF_BUS = 79
GPU_KEYS = "node, gpu, UUID"
# kube-state-metrics names an extended resource in a label value with its dots and slashes as underscores.
KSM_GPU_RESOURCE = GPU_RESOURCE.replace(".", "_").replace("/", "_")
GPU_CAPACITY = f'kube_node_status_capacity{{resource="{KSM_GPU_RESOURCE}"}}'
GPU_ALLOCATABLE = f'kube_node_status_allocatable{{resource="{KSM_GPU_RESOURCE}"}}'
XID = "DCGM_FI_DEV_XID_ERRORS"
# Karpenter's count of failed cloud-provider calls, by method and error (sigs.k8s.io/karpenter v1.14.1,
# pkg/cloudprovider/metrics): a failed launch is a failed Create.
KARPENTER_LAUNCH_ERRORS = "karpenter_cloudprovider_errors_total"



def alert(
    name: str,
    expr: str,
    duration: str,
    severity: str,
    annotations: dict[str, str],
    labels: dict[str, str],
    keep_firing_for: str = "",
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration != "0m":
        rule["for"] = duration
    if keep_firing_for:
        rule["keep_firing_for"] = keep_firing_for
    rule["labels"] = {"severity": severity, **labels}
    rule["annotations"] = annotations
    return rule


def gpu_rules() -> list[dict[str, Any]]:
    xid = f"max by ({GPU_KEYS}) ({XID})"
    ten_minutes_ago = f"max by ({GPU_KEYS}) ({XID} offset 10m)"
    gpu_runbook = (
        "Cordon and drain the node (kubectl cordon/drain {{ $labels.node }}), then terminate the instance so a "
        "new one replaces it; report the instance to AWS if it recurs."
    )
    return [
        alert(
            # The root cause that mutes the node's GPU warnings (k8s/alerting.py): it must fire before them, and
            # kube-prometheus-stack's KubeNodeNotReady waits 15 minutes. Not named Gpu*, so as not to mute itself.
            # A warning, so its critical GPU alerts still page (see the inhibition).
            "NodeWithGpusNotReady",
            f'max by (node) (kube_node_status_condition{{condition="Ready", status!="true"}}) == 1 '
            f"and on(node) max by (node) ({GPU_CAPACITY}) > 0",
            "2m",
            "warning",
            {
                "summary": "GPU node {{ $labels.node }} is not Ready",
                "description": "The kubelet stopped reporting Ready: the node's pods are lost or stranded, and its "
                "GPU warnings are muted while this fires; a GPU lost with it still pages (GpuUnavailable).",
                "runbook": "kubectl describe node {{ $labels.node }} (Conditions). To replace it now: a Karpenter node, "
                "kubectl delete node {{ $labels.node }} (Karpenter's finalizer drains it and terminates its instance); a "
                "node group's, terminate its instance, and the group starts another.",
            },
            {},
        ),
        alert(
            "GpuFallenOffBus",
            f"{xid} == {XID_FALLEN_OFF_BUS}",
            "1m",
            "critical",
            {
                "summary": "GPU {{ $labels.gpu }} on node {{ $labels.node }} has fallen off the bus (Xid 79)",
                "description": "The GPU no longer answers on PCIe; pods using it fail until the node is replaced.",
                "runbook": gpu_runbook,
            },
            {},
            # The exporter may stop reporting a GPU that is gone: that must not read as recovered. The hour is
            # an overlap, not a bound: GpuUnavailable counts the GPUs DCGM lists against the node's capacity and
            # takes over within its 10 minutes, firing for as long as the GPU stays missing (tested).
            keep_firing_for="1h",
        ),
        alert(
            "GpuXidError",
            # The exporter holds the last Xid a GPU reported, as a series labelled with its code (err_code): news
            # is a value other than ten minutes ago, a GPU with no value then (a new node), a change within the
            # ten minutes, or a series that begins non-zero (a restarted exporter, or the GPU's pod changed: DCGM
            # then reports the Xid afresh, and a repeat of the same code cannot be told from the old one). The
            # value alone would fire for the node's lifetime, and changes() alone never sees a series that
            # starts non-zero.
            f"({xid} > 0 unless {xid} == {XID_FALLEN_OFF_BUS}) "
            f"and ({xid} != {ten_minutes_ago} or ({xid} unless {ten_minutes_ago}) "
            f"or max by ({GPU_KEYS}) (changes({XID}[10m])) > 0 "
            f"or max by ({GPU_KEYS}) ({XID} unless {XID} offset 10m) > 0)",
            "0m",
            "warning",
            {
                "summary": "GPU {{ $labels.gpu }} on node {{ $labels.node }} reported Xid {{ $value }}",
                "description": "An Xid is an error the NVIDIA driver logged for this GPU in the last 10 minutes.",
                "runbook": "Look the code up in NVIDIA's Xid catalogue; 13, 31 and 43 are usually the application, "
                "48, 63, 64, 74, 92, 94 and 95 the hardware: for those drain the node and replace it.",
            },
            {},
        ),
        alert(
            # DCGM cannot see every way a GPU is lost: the device plugin withdrawing a GPU it found unhealthy,
            # or DCGM listing fewer GPUs than the node has (none at all included), catches the rest.
            "GpuUnavailable",
            f"max by (node) ({GPU_ALLOCATABLE}) < max by (node) ({GPU_CAPACITY}) "
            f"or max by (node) ({GPU_CAPACITY}) > on(node) "
            f"(count by (node) (DCGM_FI_DEV_GPU_UTIL) or on(node) 0 * max by (node) ({GPU_CAPACITY}))",
            "10m",
            "critical",
            {
                "summary": "Node {{ $labels.node }} has fewer usable GPUs than it was built with",
                "description": "The NVIDIA device plugin marked a GPU unhealthy, or DCGM reports fewer GPUs than the "
                "node has, or none; pods cannot use it, and a pod that needs every GPU of the node stays Pending.",
                "runbook": "kubectl describe node {{ $labels.node }} (Allocatable nvidia.com/gpu), and the device "
                "plugin's and the DCGM exporter's logs on it; " + gpu_runbook,
            },
            {},
        ),
    ]


def karpenter_rules() -> list[dict[str, Any]]:
    """Karpenter gone, or its launches failing: either way no GPU node comes, and a model's new replicas wait Pending."""
    scraped = f'namespace="{KARPENTER.namespace}",service="{karpenter_service()}"'
    return [
        alert(
            "KarpenterDown",
            f"absent(up{{{scraped}}} == 1)",
            "10m",
            "warning",
            {
                "summary": "Karpenter is not scraped up",
                "description": "No Karpenter controller has answered Prometheus for 10 minutes: no GPU node is launched, "
                "none is drained before a Spot interruption, and a model at zero cannot wake.",
                "runbook": f"kubectl -n {KARPENTER.namespace} get pods -l {NAME_LABEL}={KARPENTER.chart}; "
                "its logs, and the system nodes' capacity.",
            },
            {},
        ),
        alert(
            "GpuNodeLaunchesFailing",
            f'sum by (error) (rate({KARPENTER_LAUNCH_ERRORS}{{{scraped},method="Create"}}[15m])) > 0',
            "15m",
            "warning",
            {
                "summary": "Karpenter's launches keep failing ({{ $labels.error }})",
                "description": "For 15 minutes EC2 has refused the nodes Karpenter asks for, after every fallback its "
                "NodePools allow; InsufficientCapacityError means no capacity for any of the pool's types, zones and "
                "capacity types.",
                "runbook": "kubectl get nodeclaims and kubectl describe nodeclaim (its Launched condition); add instance "
                "types or capacity types to the pool, a capacity reservation, or a zone.",
            },
            {},
        ),
    ]
