"""The cluster's network: a VPC with public and private subnets per availability zone, or an existing VPC.

Nodes and the control plane's network interfaces live in the private subnets; the public ones hold
the NAT gateways and internet-facing load balancers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_aws as aws

from vllm_platform.config.cluster import ANYWHERE, Cluster, NatGateways, Vpc
from vllm_platform.contract import KARPENTER_DISCOVERY_TAG
from vllm_platform.plan.plans import PoolPlan


@dataclass
class NetworkFacts:
    vpc_id: pulumi.Input[str]
    private_subnet_ids: list[pulumi.Input[str]]
    public_subnet_ids: list[pulumi.Input[str]]
    # By pool name: the cluster's zones where EC2 offers every instance type of the pool, in name order.
    gpu_pool_zones: dict[str, list[str]]
    # Whether the private subnets carry Karpenter's discovery tag already (a VPC this program made); an
    # existing VPC's get it from the capacity layer.
    discovery_tagged: bool


def subnet_cidrs(cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Private and public subnet CIDRs for `zones` zones.

    The VPC splits into eighths: one large private subnet per zone (the VPC CNI gives every pod a
    VPC address), and the last eighth split again into small public subnets that only hold NAT
    gateways and load balancers. Six zones at most, so the eighths never overlap.
    """
    network = ipaddress.ip_network(cidr)
    eighths = list(network.subnets(prefixlen_diff=3))
    private = [str(block) for block in eighths[:zones]]
    public = [str(block) for block in list(eighths[-1].subnets(prefixlen_diff=3))[:zones]]
    return private, public


def subnet_tags(cluster_name: str, public: bool, zone: str) -> dict[str, str]:
    """Tags by which the AWS load balancer integrations pick subnets for this cluster, and Karpenter the
    private ones its GPU nodes launch into."""
    role = "kubernetes.io/role/elb" if public else "kubernetes.io/role/internal-elb"
    return {
        "Name": f"{cluster_name}-{'public' if public else 'private'}-{zone}",
        role: "1",
        f"kubernetes.io/cluster/{cluster_name}": "shared",
        **({} if public else {KARPENTER_DISCOVERY_TAG: cluster_name}),
    }


def fitting_zones(pool: PoolPlan, zones: Sequence[str], offered: Mapping[str, set[str]]) -> list[str]:
    """Those of `zones` where EC2 offers every instance type of the pool: elsewhere its nodes cannot launch."""
    return [zone for zone in zones if set(pool.instance_types) <= offered.get(zone, set())]


def _zone_rank(zone: str, uncovered: set[str], fits: dict[str, set[str]]) -> tuple[int, int, str]:
    return (-sum(zone in fits[p] for p in uncovered), -sum(zone in fits[p] for p in fits), zone)


def choose_zones(
    region_zones: Sequence[str], count: int, pools: Sequence[PoolPlan], offered: Mapping[str, set[str]]
) -> list[str]:
    """`count` of the region's zones, in name order: first a zone for each pool that no chosen zone fits yet,
    then those fitting the most pools (more zones to find scarce GPU capacity in); the first by name among equals."""
    fits = {pool.name: set(fitting_zones(pool, region_zones, offered)) for pool in pools}
    chosen: list[str] = []
    uncovered = set(fits)
    for _ in range(count):
        best = min((zone for zone in region_zones if zone not in chosen), key=lambda zone: _zone_rank(zone, uncovered, fits))
        chosen.append(best)
        uncovered = {p for p in uncovered if best not in fits[p]}
    return sorted(chosen)


def zone_problems(
    pools: Sequence[PoolPlan], zones: Sequence[str], offered: Mapping[str, set[str]], way_out: str, region: str = ""
) -> list[str]:
    """One line per pool that no zone of the cluster fits, naming its types, the cluster's zones and those that would do."""
    problems = []
    for pool in pools:
        if fitting_zones(pool, zones, offered):
            continue
        types = ", ".join(pool.instance_types)
        elsewhere = fitting_zones(pool, sorted(offered), offered)
        problems.append(
            f"cluster.gpuNodePools[{pool.name}]: no availability zone of the cluster ({', '.join(zones)}) offers {types}; "
            + (f"zones that do: {', '.join(elsewhere)}. {way_out}" if elsewhere else f"no zone of region {region} does. Use other instanceTypes, or another region")
        )
    return problems


def instance_type_offerings(pools: Sequence[PoolPlan]) -> dict[str, set[str]]:
    """By zone: which of the pools' instance types EC2 offers there."""
    types = sorted({t for pool in pools for t in pool.instance_types})
    if not types:
        return {}
    result = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=types)],
    )
    offered: dict[str, set[str]] = {}
    for instance_type, zone in zip(result.instance_types, result.locations):
        offered.setdefault(zone, set()).add(instance_type)
    return offered


def availability_zones(vpc: Vpc, pools: Sequence[PoolPlan], offered: Mapping[str, set[str]], region: str) -> list[str]:
    """The configured zones, or `availabilityZones` of the region's that need no opt-in (Local and
    Wavelength Zones do), fitting the GPU pools."""
    zones = aws.get_availability_zones(
        state="available",
        filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
    ).names
    if vpc.zones:
        unknown = sorted(set(vpc.zones) - set(zones))
        if unknown:
            raise pulumi.RunError(f"cluster.vpc.zones: {', '.join(unknown)} not zones of the region ({', '.join(sorted(zones))})")
        _stop_on(zone_problems(pools, sorted(vpc.zones), offered, "Name one of them in cluster.vpc.zones, or use other instanceTypes", region))
        return sorted(vpc.zones)
    if len(zones) < vpc.zone_count:
        raise pulumi.RunError(
            f"cluster.vpc.availabilityZones: {vpc.zone_count} requested but the region has {len(zones)} ({', '.join(zones)})"
        )
    chosen = choose_zones(sorted(zones), vpc.zone_count, pools, offered)
    _stop_on(zone_problems(pools, chosen, offered, "Raise cluster.vpc.availabilityZones, or use other instanceTypes", region))
    pulumi.log.warn(
        f"cluster.vpc.zones: not set, so the zones follow EC2's offerings and the pools ({', '.join(chosen)} now); "
        f"pin them with zones: [{', '.join(chosen)}] so that neither can ever move this VPC's subnets"
    )
    return chosen


def _stop_on(problems: list[str]) -> None:
    if problems:
        raise pulumi.RunError("\n".join(problems))


def pool_zones(pools: Sequence[PoolPlan], zones: Sequence[str], offered: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """Where each pool's nodes may launch: the cluster's zones that offer all its types; the first of them only
    for a pool in a cluster placement group, which lives in one zone."""
    found = {}
    for pool in pools:
        fits = fitting_zones(pool, sorted(set(zones)), offered)
        found[pool.name] = fits[:1] if pool.placement_group else fits
    return found


def create_network(
    cluster: Cluster, pools: Sequence[PoolPlan], parent: pulumi.Resource, tags: dict[str, str], region: str
) -> NetworkFacts:
    """The VPC, or the configured one; stops the run when a GPU pool's instance types are offered in none of its zones."""
    vpc_cfg = cluster.vpc
    offered = instance_type_offerings(pools)
    if vpc_cfg.id:
        subnet_ids = list(vpc_cfg.private_subnet_ids)
        subnet_zones = [aws.ec2.get_subnet(id=subnet).availability_zone for subnet in subnet_ids]
        way_out = "Add private subnets in one of them to cluster.vpc.privateSubnetIds, or use other instanceTypes"
        _stop_on(zone_problems(pools, sorted(set(subnet_zones)), offered, way_out, region))
        zones_of = pool_zones(pools, subnet_zones, offered)
        return NetworkFacts(vpc_cfg.id, subnet_ids, list(vpc_cfg.public_subnet_ids), zones_of, discovery_tagged=False)

    # Before any resource: a pool no zone offers must stop the run with nothing created.
    zones = availability_zones(vpc_cfg, pools, offered, region)
    name = cluster.name
    vpc = aws.ec2.Vpc(
        "vpc",
        cidr_block=vpc_cfg.cidr,
        enable_dns_support=True,
        # EKS private endpoint access and the nodes' registration need DNS hostnames.
        enable_dns_hostnames=True,
        tags={**tags, "Name": name},
        opts=pulumi.ResourceOptions(parent=parent, protect=cluster.protect),
    )
    # Children of the component, not of the VPC: `protect` is inherited from a parent, and only the VPC itself is protected.
    child = pulumi.ResourceOptions(parent=parent)
    gateway = aws.ec2.InternetGateway("igw", vpc_id=vpc.id, tags={**tags, "Name": name}, opts=child)
    public_routes = aws.ec2.RouteTable("public", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-public"}, opts=child)
    aws.ec2.Route(
        "public-default", route_table_id=public_routes.id, destination_cidr_block=ANYWHERE, gateway_id=gateway.id, opts=child
    )

    private_cidrs, public_cidrs = subnet_cidrs(vpc_cfg.cidr, len(zones))
    private_ids: list[pulumi.Input[str]] = []
    private_route_ids: list[pulumi.Input[str]] = []
    public_ids: list[pulumi.Input[str]] = []
    nat_ids: list[pulumi.Output[str]] = []
    for index, zone in enumerate(zones):
        public = aws.ec2.Subnet(
            f"public-{zone}",
            vpc_id=vpc.id,
            cidr_block=public_cidrs[index],
            availability_zone=zone,
            map_public_ip_on_launch=False,
            tags={**tags, **subnet_tags(name, True, zone)},
            opts=child,
        )
        aws.ec2.RouteTableAssociation(f"public-{zone}", subnet_id=public.id, route_table_id=public_routes.id, opts=child)
        public_ids.append(public.id)
        if vpc_cfg.nat_gateways is NatGateways.PER_AZ or index == 0:
            address = aws.ec2.Eip(f"nat-{zone}", domain="vpc", tags={**tags, "Name": f"{name}-nat-{zone}"}, opts=child)
            nat = aws.ec2.NatGateway(
                f"nat-{zone}",
                allocation_id=address.id,
                subnet_id=public.id,
                tags={**tags, "Name": f"{name}-{zone}"},
                opts=pulumi.ResourceOptions(parent=parent, depends_on=[gateway]),
            )
            nat_ids.append(nat.id)

        private = aws.ec2.Subnet(
            f"private-{zone}",
            vpc_id=vpc.id,
            cidr_block=private_cidrs[index],
            availability_zone=zone,
            tags={**tags, **subnet_tags(name, False, zone)},
            opts=child,
        )
        routes = aws.ec2.RouteTable(
            f"private-{zone}", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-private-{zone}"}, opts=child
        )
        aws.ec2.Route(
            f"private-{zone}-default",
            route_table_id=routes.id,
            destination_cidr_block=ANYWHERE,
            nat_gateway_id=nat_ids[-1],
            opts=child,
        )
        aws.ec2.RouteTableAssociation(f"private-{zone}", subnet_id=private.id, route_table_id=routes.id, opts=child)
        private_ids.append(private.id)
        private_route_ids.append(routes.id)
    # Image layers from ECR and s3:// checkpoints are S3 reads: through the gateway they skip the NAT
    # gateways' per-GB charge, tens of GB per GPU node start.
    aws.ec2.VpcEndpoint(
        "s3",
        vpc_id=vpc.id,
        service_name=f"com.amazonaws.{region}.s3",
        vpc_endpoint_type="Gateway",
        route_table_ids=private_route_ids,
        tags={**tags, "Name": f"{name}-s3"},
        opts=child,
    )
    return NetworkFacts(vpc.id, private_ids, public_ids, pool_zones(pools, zones, offered), discovery_tagged=True)


def network_outputs(facts: NetworkFacts) -> dict[str, Any]:
    return {
        "vpcId": facts.vpc_id,
        "privateSubnetIds": facts.private_subnet_ids,
        "publicSubnetIds": facts.public_subnet_ids,
    }
