"""Where EC2 offers the catalog's GPU types, per availability zone of each region: the offline render's data.

Offerings by availability zone ID, which is the same physical zone in every account:
- AZ level: SkyPilot's public AWS catalog (skypilot-org/skypilot-catalog, catalogs/v9/aws/vms.csv, at
  commit CATALOG_COMMIT), which lists each type's zones as EC2 reported them to its crawler. The file records
  no crawl date, and the commit's own date could not be read (the repository's history, 1.7 GB, was beyond
  reach); CATALOG_DATED bounds it: the commit is no older than the newest image its catalogs/v9/gcp/images.csv
  lists (created 2026-06-03), and was read for this table by 2026-12-02, when the table was committed.
- Region level, as of AS_OF: instances.vantage.sh's data (a region where a type has a price), for the regions
  the catalog leaves out (sa-east-1, il-central-1, ap-southeast-1 for p4d, GovCloud, China). There the type
  is taken as offered in every zone of the region: ASSUMED lists them, and the README says so.
p4de.24xlarge and p5.48xlarge come from the same catalog (its Local Zone rows, such as use1-atl2-az1, left
out: a Local Zone needs opting in). Offerings change: a real `pulumi preview` asks EC2
(DescribeInstanceTypeOfferings) in the account itself.

Zone names: in regions older than November 2012, and for accounts created before November 2025, AWS maps zone
names to zone IDs per account. Offline, name letter n is ID az n (us-west-2a is usw2-az1); confirm yours with
`aws ec2 describe-availability-zones --query 'AvailabilityZones[].[ZoneName,ZoneId]'`.
"""

from __future__ import annotations

AS_OF = "2026-01-21"
CATALOG_COMMIT = "2c3d7ea7d76bf84cf80d382e946c1609571485fd"
CATALOG_DATED = ("2026-06-03", "2026-12-02")
SOURCE = (
    f"SkyPilot's AWS catalog (skypilot-org/skypilot-catalog catalogs/v9/aws/vms.csv, commit {CATALOG_COMMIT[:8]}, "
    f"of {CATALOG_DATED[0]} or later, read by {CATALOG_DATED[1]}) by zone ID; "
    f"instances.vantage.sh region data of {AS_OF} where it has no rows"
)
G5 = tuple(f"g5.{size}" for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"))
P4D, P4DE, P5 = "p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge"

# Every zone ID of the region that needs no opt-in: those the catalog lists for any type there; for the
# regions it leaves out, the region's three zones (az1 to az3). Offline, az n is the n-th name letter.
REGION_ZONES: dict[str, tuple[str, ...]] = {
    "ap-east-1": ("ape1-az1", "ape1-az2", "ape1-az3"),
    "ap-northeast-1": ("apne1-az1", "apne1-az2", "apne1-az4"),
    "ap-northeast-2": ("apne2-az1", "apne2-az2", "apne2-az3", "apne2-az4"),
    "ap-south-1": ("aps1-az1", "aps1-az2", "aps1-az3"),
    "ap-southeast-1": ("apse1-az1", "apse1-az2", "apse1-az3"),
    "ap-southeast-2": ("apse2-az1", "apse2-az2", "apse2-az3"),
    "ap-southeast-3": ("apse3-az1", "apse3-az2", "apse3-az3"),
    "ca-central-1": ("cac1-az1", "cac1-az2", "cac1-az4"),
    "cn-north-1": ("cnn1-az1", "cnn1-az2", "cnn1-az4"),
    "cn-northwest-1": ("cnnw1-az1", "cnnw1-az2", "cnnw1-az3"),
    "eu-central-1": ("euc1-az1", "euc1-az2", "euc1-az3"),
    "eu-north-1": ("eun1-az1", "eun1-az2", "eun1-az3"),
    "eu-west-1": ("euw1-az1", "euw1-az2", "euw1-az3"),
    "eu-west-2": ("euw2-az1", "euw2-az2", "euw2-az3"),
    "il-central-1": ("ilc1-az1", "ilc1-az2", "ilc1-az3"),
    "me-central-1": ("mec1-az1", "mec1-az2", "mec1-az3"),
    "sa-east-1": ("sae1-az1", "sae1-az2", "sae1-az3"),
    "us-east-1": ("use1-az1", "use1-az2", "use1-az3", "use1-az4", "use1-az5", "use1-az6"),
    "us-east-2": ("use2-az1", "use2-az2", "use2-az3"),
    "us-gov-west-1": ("usgw1-az1", "usgw1-az2", "usgw1-az3"),
    "us-west-1": ("usw1-az1", "usw1-az3"),
    "us-west-2": ("usw2-az1", "usw2-az2", "usw2-az3", "usw2-az4"),
}

_G5_ZONES = {
    "ap-east-1": ("ape1-az1", "ape1-az2"),
    "ap-northeast-1": ("apne1-az1", "apne1-az4"),
    "ap-northeast-2": ("apne2-az1", "apne2-az3", "apne2-az4"),
    "ap-south-1": ("aps1-az1", "aps1-az3"),
    "ap-southeast-2": ("apse2-az1", "apse2-az2"),
    "ap-southeast-3": ("apse3-az1", "apse3-az3"),
    "ca-central-1": ("cac1-az1", "cac1-az2"),
    "eu-central-1": ("euc1-az1", "euc1-az2", "euc1-az3"),
    "eu-north-1": ("eun1-az2", "eun1-az3"),
    "eu-west-1": ("euw1-az1", "euw1-az2", "euw1-az3"),
    "eu-west-2": ("euw2-az2", "euw2-az3"),
    "me-central-1": ("mec1-az1", "mec1-az2"),
    "us-east-1": ("use1-az1", "use1-az2", "use1-az4", "use1-az5", "use1-az6"),
    "us-east-2": ("use2-az1", "use2-az2", "use2-az3"),
    "us-west-2": ("usw2-az1", "usw2-az2", "usw2-az3"),
}
_P4D_ZONES = {
    "ap-northeast-1": ("apne1-az1", "apne1-az4"),
    "ap-northeast-2": ("apne2-az2", "apne2-az4"),
    "ap-south-1": ("aps1-az1", "aps1-az2", "aps1-az3"),
    "ap-southeast-2": ("apse2-az1", "apse2-az2"),
    "ca-central-1": ("cac1-az1", "cac1-az2"),
    "eu-central-1": ("euc1-az1", "euc1-az2", "euc1-az3"),
    "eu-north-1": ("eun1-az3",),
    "eu-west-1": ("euw1-az2",),
    "eu-west-2": ("euw2-az2", "euw2-az3"),
    "us-east-1": ("use1-az1", "use1-az2", "use1-az4", "use1-az6"),
    "us-east-2": ("use2-az1", "use2-az2", "use2-az3"),
    "us-west-2": ("usw2-az1", "usw2-az2", "usw2-az3", "usw2-az4"),
}
_P4DE_ZONES = {
    "ap-northeast-1": ("apne1-az1", "apne1-az4"),
    "ap-southeast-1": ("apse1-az2", "apse1-az3"),
    "eu-central-1": ("euc1-az1", "euc1-az2"),
    "us-east-1": ("use1-az4", "use1-az6"),
    "us-west-2": ("usw2-az1", "usw2-az2", "usw2-az3"),
}
_P5_ZONES = {
    "ap-northeast-1": ("apne1-az1", "apne1-az4"),
    "ap-northeast-2": ("apne2-az1",),
    "ap-south-1": ("aps1-az1", "aps1-az2", "aps1-az3"),
    "ap-southeast-2": ("apse2-az1", "apse2-az2", "apse2-az3"),
    "ap-southeast-3": ("apse3-az1",),
    "ca-central-1": ("cac1-az4",),
    "eu-north-1": ("eun1-az1", "eun1-az2", "eun1-az3"),
    "eu-west-2": ("euw2-az1", "euw2-az2", "euw2-az3"),
    "us-east-1": ("use1-az1", "use1-az2", "use1-az3", "use1-az4", "use1-az5", "use1-az6"),
    "us-east-2": ("use2-az1", "use2-az2", "use2-az3"),
    "us-west-1": ("usw1-az1", "usw1-az3"),
    "us-west-2": ("usw2-az1", "usw2-az2", "usw2-az3", "usw2-az4"),
}
# Regions with a price for the type but no zone rows in the catalog: every zone of the region, assumed.
ASSUMED: dict[str, tuple[str, ...]] = {
    "sa-east-1": (*G5, P4D),
    "il-central-1": G5,
    "ap-southeast-1": (P4D,),
    "us-gov-west-1": (P4D,),
    "cn-north-1": G5,
    "cn-northwest-1": (*G5, P4D),
}


def _offerings() -> dict[str, dict[str, set[str]]]:
    table: dict[str, dict[str, set[str]]] = {region: {zone: set() for zone in zones} for region, zones in REGION_ZONES.items()}
    for types, zones_by_region in ((G5, _G5_ZONES), ((P4D,), _P4D_ZONES), ((P4DE,), _P4DE_ZONES), ((P5,), _P5_ZONES)):
        for region, zones in zones_by_region.items():
            for zone in zones:
                table[region][zone] |= set(types)
    for region, types in ASSUMED.items():
        for zone in REGION_ZONES[region]:
            table[region][zone] |= set(types)
    return table


# region -> zone ID -> the catalog's GPU types EC2 offers there.
OFFERINGS = _offerings()


def zone_name(region: str, zone_id: str) -> str:
    """The offline name of a zone: the n-th letter for az n."""
    return region + "abcdefgh"[int(zone_id.rpartition("-az")[2]) - 1]


def zones(region: str) -> list[tuple[str, str]]:
    """(name, ID) of each zone of the region, by name."""
    return sorted((zone_name(region, zone_id), zone_id) for zone_id in REGION_ZONES[region])


def offered_by_name(region: str) -> dict[str, set[str]]:
    """Zone name -> the catalog types offered there."""
    return {zone_name(region, zone_id): types for zone_id, types in OFFERINGS[region].items()}
