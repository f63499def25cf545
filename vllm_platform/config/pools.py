"""`cluster.gpuNodePools[]`: the GPU pools, each one Karpenter NodePool, with its capacity types and reservations."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Optional

from pydantic import Field, StrictBool, StrictInt, StrictStr, ValidationInfo, field_validator, model_validator

from vllm_platform import names
from vllm_platform.catalog import INSTANCE_TYPES
from vllm_platform.config.base import DNS_1123_LABEL, Section, check_label, check_ordered, check_pattern, duplicates
from vllm_platform.contract import LABEL_MAX_LENGTH

# A pool's NodePool and EC2NodeClass are named gpu-<name>, a Kubernetes name of 63 characters at most.
GPU_POOL_NAME_MAX_LENGTH = LABEL_MAX_LENGTH - len(names.GPU_POOL_PREFIX)


class CapacityKind(StrEnum):
    """Karpenter's capacity types (karpenter.sh/capacity-type): capacity reservations (ODCRs and Capacity
    Blocks for ML), spot, on-demand."""

    RESERVED = "reserved"
    SPOT = "spot"
    ON_DEMAND = "on-demand"

    @property
    def output_name(self) -> str:
        """The `gpuPools.<pool>.capacityType` output's word for it: the node groups' ON_DEMAND and SPOT, which the
        output held before Karpenter (its names and shapes change only with a major version), and RESERVED."""
        return self.name


class NodeGroupCapacityType(StrEnum):
    """An EKS managed node group's capacity type, as the old `capacityType` key names it."""

    ON_DEMAND = "ON_DEMAND"
    SPOT = "SPOT"


# Karpenter's own order among the types a NodePool allows; it launches the first that has an offering left.
CAPACITY_PREFERENCE = (CapacityKind.RESERVED, CapacityKind.SPOT, CapacityKind.ON_DEMAND)
CAPACITY_RESERVATION_ID = re.compile(r"cr-[0-9a-z]+", re.ASCII)
KARPENTER_DURATION = re.compile(r"([0-9]+(s|m|h))+|Never", re.ASCII)
KARPENTER_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
# A node that expires within the hour of its launch is replaced before a large model has loaded on it; an empty
# node kept past 30 days is kept, and `Never` says so.
MIN_EXPIRE_AFTER_SECONDS, MAX_CONSOLIDATE_AFTER_SECONDS = 3600, 720 * 3600
MAX_POOL_NODES = 1000
# What the EC2NodeClass CRD (Karpenter v1.14.1) and EC2's tags allow in capacityReservationSelectorTerms.
MAX_RESERVATION_TERMS, MAX_RESERVATION_TAGS = 30, 20
MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH = 128, 256


def karpenter_seconds(duration: str) -> int:
    """Seconds of a Karpenter duration other than Never (`1h30m` is 5400)."""
    return sum(int(count) * KARPENTER_UNIT_SECONDS[unit] for count, unit in re.findall(r"([0-9]+)(s|m|h)", duration))
# A GPU node's root volume: on Karpenter's nodes only the OS and its logs (the rest is on the NVMe RAID0); on an
# existing cluster's node group the image and a downloaded checkpoint too, as the fit checks always assumed there.
CREATED_ROOT_VOLUME_GIB = 100
EXISTING_ROOT_VOLUME_GIB = 200


class CapacityReservation(Section):
    """One `capacityReservationSelectorTerms` entry of the pool's EC2NodeClass: an ODCR or a Capacity Block
    (EC2 models both as capacity reservations), by id or by tags."""

    id: Optional[StrictStr] = Field(None, description="a capacity reservation id, `cr-...`")
    tags: Optional[dict[StrictStr, StrictStr]] = Field(None, description="tags that select reservations, such as `{team: llm}`")

    @field_validator("id")
    @classmethod
    def _reservation_id(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_pattern(value, CAPACITY_RESERVATION_ID, "a capacity reservation id such as cr-0123456789abcdef0")

    @field_validator("tags")
    @classmethod
    def _selector_tags(cls, value: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        # The EC2NodeClass CRD takes at most 20 tags, none empty (its CEL rule, which the offline render cannot
        # run); EC2 takes keys of 128 characters and values of 256 at most. '*' matches any value of its key.
        if value is None:
            return None
        if len(value) > MAX_RESERVATION_TAGS:
            raise ValueError(f"selects by {len(value)} tags; the EC2NodeClass takes at most {MAX_RESERVATION_TAGS}")
        for key, text in value.items():
            if not key or not text:
                raise ValueError(f"tag {key!r} has an empty key or value, which Karpenter refuses; use '*' for any value")
            if len(key) > MAX_TAG_KEY_LENGTH or len(text) > MAX_TAG_VALUE_LENGTH:
                raise ValueError(
                    f"tag {key[:40]!r} is {len(key)} characters with a value of {len(text)}; EC2 takes keys of at most "
                    f"{MAX_TAG_KEY_LENGTH} and values of at most {MAX_TAG_VALUE_LENGTH}"
                )
        return value

    @model_validator(mode="after")
    def _one_selector(self) -> "CapacityReservation":
        if (self.id is None) == (not self.tags):
            raise ValueError("a capacity reservation is selected by id or by tags, exactly one of the two")
        return self

    def selector_term(self) -> dict[str, Any]:
        return {"id": self.id} if self.id else {"tags": dict(self.tags or {})}


class GpuNodePool(Section):
    name: StrictStr = Field(
        description=(
            f"DNS-1123 label of at most {GPU_POOL_NAME_MAX_LENGTH} characters: its Karpenter NodePool and EC2NodeClass "
            "are `gpu-<name>`, and its nodes' `gpu-pool` label is the name"
        )
    )
    instance_types: list[StrictStr] = Field(
        min_length=1,
        description=(
            f"catalog types ({', '.join(INSTANCE_TYPES)}), all with the same GPU model and count; Karpenter launches "
            "whichever of them has capacity, and every model of the pool must fit the smallest (the fit checks use it)"
        ),
    )
    min_size: StrictInt = Field(
        0,
        ge=0,
        description=(
            "on a created cluster only 0: its NodePool launches only the nodes pods ask for, so the models' "
            "`replicas.min` hold the pool's nodes (a value above 0 is refused, saying so). On an existing cluster, the "
            "node group's own minimum, which the idle cost counts"
        ),
    )
    max_size: StrictInt = Field(
        ge=1,
        le=MAX_POOL_NODES,
        description=(
            "nodes at most: the NodePool's `limits` (`nvidia.com/gpu` and `cpu` of that many of its widest type), the "
            "cap on what the pool can cost (Karpenter may overrun it briefly: by one node while a drift replacement "
            "rolls, or in a fast scale-out, as its limit check is eventually consistent)"
        ),
    )
    capacity_types: list[CapacityKind] = Field(
        [CapacityKind.ON_DEMAND],
        min_length=1,
        description=(
            "what Karpenter may launch, in its order of preference: `reserved` (the pool's `capacityReservations`), "
            "`spot`, `on-demand`. It always prefers them in that order, taking the next only when no offering "
            "(type × zone) of the one before is available (and dropping any Spot offering dearer than the cheapest "
            "on-demand one), so the list must be written in that order; a type left out is never used (`[spot]` "
            "has no on-demand fallback). On an existing cluster, what its node group launches, for the outputs"
        ),
    )
    capacity_type: Optional[NodeGroupCapacityType] = Field(
        None,
        description=(
            "on an existing cluster only, where it describes the node group as it always did: `ON_DEMAND` (the same "
            "as `capacityTypes: [on-demand]`) or `SPOT` (`[spot]`). A created cluster's pools take `capacityTypes`"
        ),
    )
    capacity_reservations: list[CapacityReservation] = Field(
        [],
        max_length=MAX_RESERVATION_TERMS,
        description=(
            "with `reserved` in `capacityTypes`: the ODCRs or Capacity Blocks to launch into, by `id` or `tags` (on an "
            "existing cluster, those its node group launches into, for the outputs)"
        ),
    )
    consolidate_after: StrictStr = Field(
        "20m",
        description=(
            "how long a GPU node stays empty before Karpenter removes it (`Never` keeps it). Only empty nodes go: a "
            "node that serves a model is never drained to save money"
        ),
    )
    expire_after: StrictStr = Field(
        "Never",
        description=(
            "a node's lifetime, such as `720h` (`Never`: forever). Expiry is forceful in Karpenter 1.14: no disruption "
            "budget holds it and no replacement is started first, nodes launched together expire together, and the "
            "pinned `gpuAmiAlias` brings the same AMI back. Newer AMIs come by raising the alias, a drift Karpenter "
            "rolls one node at a time"
        ),
    )
    root_volume_gib: Optional[StrictInt] = Field(
        None,
        ge=50,
        le=16384,
        alias="rootVolumeGiB",
        description=(
            f"on a created cluster, the encrypted gp3 root volume (600 MiB/s, 6000 IOPS; {CREATED_ROOT_VOLUME_GIB} by "
            "default) for the OS and its logs: the images and the pods' disk are on the node's NVMe instance store, "
            "in one RAID0. On an existing cluster, the node group's root volume, which holds the image and a "
            f"checkpoint downloaded from the hub ({EXISTING_ROOT_VOLUME_GIB} by default): the fit checks hold the "
            "checkpoint to it"
        ),
    )

    def root_volume(self, existing: bool) -> int:
        """The root volume's size, given or the default for the kind of cluster."""
        if self.root_volume_gib is not None:
            return self.root_volume_gib
        return EXISTING_ROOT_VOLUME_GIB if existing else CREATED_ROOT_VOLUME_GIB
    warm_nodes: StrictInt = Field(
        0,
        ge=0,
        description=(
            "spare nodes kept up with the vLLM image pulled, each held by a placeholder pod that any model's new "
            "replica preempts: it starts on a node at once instead of waiting for one to boot. Each costs a node "
            "around the clock (the `idleHourlyGpuCostUsd` output counts it); at most `maxSize`"
        ),
    )
    efa: StrictBool = Field(
        False,
        description=(
            "for 8-GPU types: EFA interfaces on the nodes. Node-level only: every model serves within one node, so no pod "
            "requests EFA and no EFA device plugin is installed; it prepares a pool for serving across nodes"
        ),
    )
    placement_group: StrictBool = Field(
        False,
        description="a cluster placement group for the pool's nodes, which pins the pool to one subnet, in a zone that offers its types",
    )

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: str) -> str:
        check_label(value, DNS_1123_LABEL, "DNS-1123 label")
        if len(value) > GPU_POOL_NAME_MAX_LENGTH:
            raise ValueError(
                f"{value!r} has {len(value)} characters, above {GPU_POOL_NAME_MAX_LENGTH}: its NodePool's name "
                f"gpu-{value} must be a Kubernetes name of 63 at most"
            )
        return value

    @field_validator("instance_types")
    @classmethod
    def _known_gpu_types(cls, values: list[str]) -> list[str]:
        if twice := duplicates(values):
            raise ValueError(f"names {', '.join(twice)} more than once")
        unknown = [v for v in values if v not in INSTANCE_TYPES]
        if unknown:
            # Quoted: the message stays one line, and a stray newline or space in the value shows.
            raise ValueError(f"unknown GPU instance type {', '.join(map(repr, unknown))}; known: {', '.join(INSTANCE_TYPES)}")
        shapes = {(INSTANCE_TYPES[v].gpu.model, INSTANCE_TYPES[v].gpu_count) for v in values}
        if len(shapes) > 1:
            described = ", ".join(f"{v} ({INSTANCE_TYPES[v].gpu_count}x {INSTANCE_TYPES[v].gpu.model})" for v in values)
            raise ValueError(f"all types in one pool need the same GPU model and count, got {described}")
        return values

    @model_validator(mode="before")
    @classmethod
    def _capacity_type_as_capacity_types(cls, data: Any) -> Any:
        """The old key, where the cluster accepts it (an existing one: Cluster refuses it on a created one), reads
        as the list every consumer of the pool reads."""
        if not isinstance(data, dict) or (given := data.get("capacityType", data.get("capacity_type"))) is None:
            return data
        if {"capacityTypes", "capacity_types"} & set(data):
            raise ValueError("capacityType and capacityTypes both give the capacity types; keep capacityTypes")
        kinds = {NodeGroupCapacityType.ON_DEMAND: CapacityKind.ON_DEMAND, NodeGroupCapacityType.SPOT: CapacityKind.SPOT}
        # Any other value is left for the field to refuse, naming the two it takes.
        return {**data, "capacityTypes": [kinds[given]]} if isinstance(given, str) and given in kinds else data

    @field_validator("capacity_types")
    @classmethod
    def _in_karpenters_order(cls, values: list[CapacityKind]) -> list[CapacityKind]:
        if len(set(values)) != len(values):
            raise ValueError(f"{', '.join(values)} names a capacity type twice")
        ordered = sorted(values, key=CAPACITY_PREFERENCE.index)
        if values != ordered:
            raise ValueError(
                f"[{', '.join(values)}] is not the order Karpenter tries them in (reserved, then spot, then on-demand); "
                f"write [{', '.join(ordered)}]"
            )
        return values

    @field_validator("consolidate_after", "expire_after")
    @classmethod
    def _karpenter_duration(cls, value: str, info: ValidationInfo) -> str:
        check_pattern(value, KARPENTER_DURATION, "a duration such as 20m, 720h or 1h30m, or Never")
        if value == "Never":
            return value
        seconds = karpenter_seconds(value)
        if info.field_name == "expire_after" and seconds < MIN_EXPIRE_AFTER_SECONDS:
            raise ValueError(
                f"{value} is under 1h: nodes would be replaced before a model has loaded on them; give 1h or more, or Never"
            )
        if info.field_name == "consolidate_after" and seconds > MAX_CONSOLIDATE_AFTER_SECONDS:
            raise ValueError(f"{value} is over 720h: to keep empty nodes, say Never")
        return value

    @model_validator(mode="after")
    def _sizes_ordered(self) -> "GpuNodePool":
        check_ordered(self.min_size, self.max_size)
        reserved = CapacityKind.RESERVED in self.capacity_types
        if reserved and not self.capacity_reservations:
            raise ValueError("capacityTypes has reserved but capacityReservations is empty: name the ODCRs or Capacity Blocks")
        if self.capacity_reservations and not reserved:
            raise ValueError("capacityReservations are used only with reserved in capacityTypes; add it first in the list")
        if self.warm_nodes > self.max_size:
            raise ValueError(f"warmNodes {self.warm_nodes} is above maxSize {self.max_size}: the NodePool launches no more")
        if self.efa and not all(INSTANCE_TYPES[t].gpu_count == 8 for t in self.instance_types):
            raise ValueError("efa is for 8-GPU types (g5.48xlarge, p4d, p4de, p5) that serve across nodes")
        return self
