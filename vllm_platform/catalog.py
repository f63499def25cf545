"""The GPU instance types the platform knows, with the figures the fit checks and cost outputs use.

Hardware figures: the AWS EC2 instance-type pages for G5, P4 and P5
(https://aws.amazon.com/ec2/instance-types/g5/, .../p4/, .../p5/).
Network bandwidth, baseline and burst (Gbit/s): the EC2 User Guide's accelerated computing table ("Baseline
bandwidth (Gbps)", "Burst bandwidth (Gbps)"; NETWORK_SOURCE, NETWORK_AS_OF), the same
baselines as Karpenter v1.14.1's generated `instance-network-bandwidth` (2026-07-06). A burst lasts "typically
from 5 to 60 minutes", best effort, with full credits at launch. Network cards: the same guide's ENI table.
Max pods: amazon-eks-ami `eni-max-pods.txt`, which the EKS AL2023 AMI uses for kubelet's maxPods.
Prices: EC2 On-Demand, Linux, us-east-1, as listed on PRICES_AS_OF. P4 and P5 include the
price reduction AWS applied to those families in June 2025. Other regions differ; the cost
outputs are an upper bound for planning, not a bill.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2026-11-01"
# Where the bandwidths come from, for the cold-start estimate's table (whose weights and pull floors they set).
NETWORK_AS_OF = "2023-05-11"
NETWORK_SOURCE = (
    "EC2 User Guide, accelerated computing instances' network specifications (\"Baseline bandwidth\", \"Burst "
    "bandwidth\", network cards; awsdocs/amazon-ec2-user-guide@d2899614)"
)
PRICE_SOURCE = f"AWS EC2 On-Demand pricing, Linux, us-east-1, as of {PRICES_AS_OF}"


@dataclass(frozen=True)
class Gpu:
    model: str
    memory_gb: float
    architecture: str

    @property
    def native_fp8(self) -> bool:
        # Ampere has no FP8 tensor cores: vLLM runs fp8 checkpoints there as weight-only (Marlin).
        return self.architecture not in ("ampere",)


A10G = Gpu(model="A10G", memory_gb=24, architecture="ampere")
A100_40GB = Gpu(model="A100-40GB", memory_gb=40, architecture="ampere")
A100_80GB = Gpu(model="A100-80GB", memory_gb=80, architecture="ampere")
H100_80GB = Gpu(model="H100-80GB", memory_gb=80, architecture="hopper")


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: Gpu
    gpu_count: int
    vcpu: int
    memory_gib: int
    local_nvme_gb: int
    max_pods: int
    on_demand_usd_per_hour: float
    network_gbps: float
    # Above the baseline, for a while: the sizes up to 4xlarge only.
    burst_gbps: float | None = None
    # Bandwidth is per card: one pod's traffic leaves through the card of its interface.
    network_cards: int = 1

    @property
    def pod_network_gbps(self) -> float:
        """What one pod's transfers can reach: the burst where there is one (a fresh node's credits are full),
        of one network card."""
        return (self.burst_gbps or self.network_gbps) / self.network_cards


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType("g5.xlarge", A10G, 1, 4, 16, 250, 58, 1.006, 2.5, 10),
        InstanceType("g5.2xlarge", A10G, 1, 8, 32, 450, 58, 1.212, 5, 10),
        InstanceType("g5.4xlarge", A10G, 1, 16, 64, 600, 234, 1.624, 10, 25),
        InstanceType("g5.8xlarge", A10G, 1, 32, 128, 900, 234, 2.448, 25),
        InstanceType("g5.12xlarge", A10G, 4, 48, 192, 3800, 737, 5.672, 40),
        InstanceType("g5.16xlarge", A10G, 1, 64, 256, 1900, 234, 4.096, 25),
        InstanceType("g5.24xlarge", A10G, 4, 96, 384, 3800, 737, 8.144, 50),
        InstanceType("g5.48xlarge", A10G, 8, 192, 768, 7600, 345, 16.288, 100),
        InstanceType("p4d.24xlarge", A100_40GB, 8, 96, 1152, 8000, 737, 21.958, 400, network_cards=4),
        InstanceType("p4de.24xlarge", A100_80GB, 8, 96, 1152, 8000, 737, 27.447, 400, network_cards=4),
        InstanceType("p5.48xlarge", H100_80GB, 8, 192, 2048, 30720, 100, 55.040, 3200, network_cards=32),
    )
}


@dataclass(frozen=True)
class Quota:
    name: str
    code: str
    # AWS's default for a new account, where AWS states one; None where it publishes none.
    default: int | None


# EC2 Service Quotas a stack of this platform draws on, per Region (Service Quotas codes, service `ec2`). AWS
# publishes a default only for Elastic IPs (EC2 User Guide: "limited to five (5) Elastic IP addresses per
# Region"). For the vCPU quotas it publishes none: the EC2 User Guide's On-Demand and Spot quota pages list the
# quota types alone (awsdocs/amazon-ec2-user-guide, last version 2023-05-11); the table of defaults the On-Demand
# page had until 2021 (128 vCPUs for G and P, 1152 Standard) said new accounts might start lower, and was
# dropped. New accounts have been seen at 0.
ELASTIC_IPS = Quota("EC2-VPC Elastic IPs", "L-0263D0A3", 5)
# On demand one quota covers every P type; Spot counts P5 (p5, p5e, p5en) apart from P4, P3 and P2. The P5 Spot
# code is the one public listings of Service Quotas give, not found in AWS's guides; `aws service-quotas
# get-service-quota --service-code ec2 --quota-code L-C4BD4855` confirms it in an account.
P_ON_DEMAND = Quota("Running On-Demand P instances", "L-417A185B", None)
GPU_VCPU_QUOTAS = {
    ("g", "ON_DEMAND"): Quota("Running On-Demand G and VT instances", "L-DB2E81BA", None),
    ("g", "SPOT"): Quota("All G and VT Spot Instance Requests", "L-3819A6DF", None),
    ("p", "ON_DEMAND"): P_ON_DEMAND,
    ("p", "SPOT"): Quota("All P4, P3 and P2 Spot Instance Requests", "L-7212CCBC", None),
    ("p5", "ON_DEMAND"): P_ON_DEMAND,
    ("p5", "SPOT"): Quota("All P5 Spot Instance Requests", "L-C4BD4855", None),
}


# The system nodes' quota: every general-purpose, compute, memory and storage family draws on it.
STANDARD_VCPU_QUOTA = Quota("Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "L-1216C47A", None)
STANDARD_FAMILIES = frozenset("acdhimrtz")


def size_vcpus(instance_type: str) -> int | None:
    """vCPUs by the size's name, where its name says (large 2, xlarge 4, 8xlarge 32); None for the others
    (medium, small, metal), whose count differs between families."""
    size = instance_type.partition(".")[2]
    if size == "large":
        return 2
    multiple = size.removesuffix("xlarge")
    if multiple != size and (multiple == "" or multiple.isdigit()):
        return 4 * int(multiple or 1)
    return None


def quota_family(instance_type: str) -> str:
    """The family whose vCPU quotas an instance type draws on (GPU_VCPU_QUOTAS): g5.* on G, p4d on P, p5 on P on
    demand and on P5 for Spot."""
    return "p5" if instance_type.startswith("p5") else instance_type[0]


# EFA-capable network cards per type: one EFA interface per card.
EFA_INTERFACES = {"g5.48xlarge": 1, "p4d.24xlarge": 4, "p4de.24xlarge": 4, "p5.48xlarge": 32}


def smallest(instance_types: list[str] | tuple[str, ...]) -> InstanceType:
    """The smallest of a pool's types: every fit check must hold on whichever type launches."""
    return min((INSTANCE_TYPES[t] for t in instance_types), key=lambda t: (t.vcpu, t.memory_gib))


def kube_reserved_cpu_millis(vcpu: int) -> int:
    # The EKS AMI's kube-reserved CPU ladder: 6% of core 1, 1% of core 2, 0.5% of cores 3-4, 0.25% beyond.
    ladder = [(1, 60), (1, 10), (2, 5)]
    reserved, left = 0, vcpu
    for cores, millis in ladder:
        used = min(left, cores)
        reserved += used * millis
        left -= used
    return reserved + left * 25 // 10


# Requests of the DaemonSets every GPU node runs (aws-node, kube-proxy, pod identity agent,
# EBS CSI node, NVIDIA device plugin, DCGM exporter, node exporter), rounded up.
DAEMONSET_CPU_MILLIS = 600
DAEMONSET_MEMORY_MIB = 1024
EVICTION_HARD_MEMORY_MIB = 100


def allocatable_cpu_millis(instance: InstanceType) -> int:
    """CPU a workload pod can request on an otherwise empty node of this type."""
    return instance.vcpu * 1000 - kube_reserved_cpu_millis(instance.vcpu) - DAEMONSET_CPU_MILLIS


def allocatable_memory_mib(instance: InstanceType) -> int:
    """Memory a workload pod can request: capacity less the EKS AMI's kube-reserved, eviction and DaemonSets."""
    kube_reserved = 255 + 11 * instance.max_pods
    return instance.memory_gib * 1024 - kube_reserved - EVICTION_HARD_MEMORY_MIB - DAEMONSET_MEMORY_MIB
