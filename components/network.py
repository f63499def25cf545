"""The cluster's network: a VPC with public and private subnets per availability zone, or an existing VPC.

Nodes and the control plane's network interfaces live in the private subnets; the public ones hold
the NAT gateways and internet-facing load balancers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.config import ANYWHERE, Cluster


@dataclass
class NetworkFacts:
    vpc_id: pulumi.Input[str]
    private_subnet_ids: list[pulumi.Input[str]]
    public_subnet_ids: list[pulumi.Input[str]]
    # Created here and protected with the cluster; None for an existing VPC.
    vpc: aws.ec2.Vpc | None = None


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
    """Tags by which the AWS load balancer integrations pick subnets for this cluster."""
    role = "kubernetes.io/role/elb" if public else "kubernetes.io/role/internal-elb"
    return {
        "Name": f"{cluster_name}-{'public' if public else 'private'}-{zone}",
        role: "1",
        f"kubernetes.io/cluster/{cluster_name}": "shared",
    }


def availability_zones(count: int) -> list[str]:
    """The first `count` zones of the region that need no opt-in (Local and Wavelength Zones do)."""
    zones = aws.get_availability_zones(
        state="available",
        filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
    ).names
    if len(zones) < count:
        raise pulumi.RunError(
            f"cluster.vpc.availabilityZones: {count} requested but the region has {len(zones)} ({', '.join(zones)})"
        )
    return sorted(zones)[:count]


def create_network(cluster: Cluster, parent: pulumi.Resource, tags: dict[str, str]) -> NetworkFacts:
    vpc_cfg = cluster.vpc
    if vpc_cfg.id:
        return NetworkFacts(vpc_cfg.id, list(vpc_cfg.private_subnet_ids), list(vpc_cfg.public_subnet_ids))

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

    zones = availability_zones(vpc_cfg.availability_zones)
    private_cidrs, public_cidrs = subnet_cidrs(vpc_cfg.cidr, len(zones))
    private_ids: list[pulumi.Input[str]] = []
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
        if vpc_cfg.nat_gateways == "perAz" or index == 0:
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
    return NetworkFacts(vpc.id, private_ids, public_ids, vpc)


def network_outputs(facts: NetworkFacts) -> dict[str, Any]:
    return {
        "vpcId": facts.vpc_id,
        "privateSubnetIds": facts.private_subnet_ids,
        "publicSubnetIds": facts.public_subnet_ids,
    }
