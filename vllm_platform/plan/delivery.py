"""Where each model's weights and image come from, resolved once: the model cache and the staging that fills it,
and the route its image takes to the nodes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

from vllm_platform import names
from vllm_platform.config.models import Model
from vllm_platform.config.platform import PlatformConfig
from vllm_platform.contract import images

CACHE_ROOT = "models"


class WeightsSource(StrEnum):
    # Downloaded from the Hugging Face hub into the pod at every start, as vLLM does by itself.
    HUB = "hub"
    # Streamed from an s3:// prefix the config gives.
    S3 = "s3"
    # Streamed from the stack's model cache, which a staging Job fills once per revision.
    CACHE = "cache"


def cache_prefix(repo: str, revision: str) -> str:
    """The cache key of one revision: `models/<org>/<name>/<revision>/`."""
    return f"{CACHE_ROOT}/{repo}/{revision}/"


def marker_key(repo: str, revision: str) -> str:
    """Where the staging Job records a complete copy: beside the prefix, so a serving pod's listing never sees it."""
    return f"{CACHE_ROOT}/{repo}/{revision}.staged.json"


@dataclass(frozen=True)
class StagingPlan:
    """One model revision's copy from the hub into the cache, by a Job on the system nodes."""

    repo: str
    revision: str
    prefix: str
    marker_key: str
    job_name: str
    service_account: str
    # The Job's activeDeadlineSeconds: every retry of the copy together.
    deadline_seconds: int


# How fast a staging Job copies from the hub to S3, for its deadline only: the low end of what the hub gives
# one client in AWS (16 GB in 80 to 160 s), halved again for a slow day; the copy itself is as fast as it gets.
STAGING_BYTES_PER_SECOND = 50e6
# Per attempt: the pod scheduled on a system node, its small image pulled, the listing read, with room to spare.
STAGING_FIXED_SECONDS = 300
STAGING_BACKOFF_LIMIT = 3


def staging_plan(cfg: PlatformConfig, model: Model, checkpoint_bytes: float) -> Optional[StagingPlan]:
    """The staging of a hub model with a revision, where the cache is on; None otherwise (an s3:// model, a
    moving `main`, a simulated model, no cache)."""
    if not cfg.caches_models or cfg.is_simulated(model) or model.revision is None or model.weights_bucket:
        return None
    # A retried pod resumes where the last one stopped: the bytes are copied once, the fixed part paid per attempt.
    copy_seconds = checkpoint_bytes / STAGING_BYTES_PER_SECOND + STAGING_FIXED_SECONDS * (STAGING_BACKOFF_LIMIT + 1)
    return StagingPlan(
        repo=model.model,
        revision=model.revision,
        prefix=cache_prefix(model.model, model.revision),
        marker_key=marker_key(model.model, model.revision),
        # A new revision is a new Job: a Job's pod template never changes in place.
        job_name=names.kubernetes_name(f"stage-{model.name}-{model.revision[:12]}"),
        service_account=names.kubernetes_name(f"{model.name}-stage"),
        deadline_seconds=math.ceil(copy_seconds),
    )


@dataclass(frozen=True)
class WeightsPlan:
    source: WeightsSource
    # Where the weights stream from: the config's s3:// bucket, or the cache's; None for the stack's own cache,
    # whose name exists only once the bucket does.
    bucket: Optional[str]
    prefix: Optional[str]
    staging: Optional[StagingPlan]
    # What vLLM's --model gets: the hub id or the s3:// URI; None for the stack's own cache, named only once created.
    model: Optional[str]

    @property
    def streams(self) -> bool:
        return self.source is not WeightsSource.HUB

    def uri(self, bucket: str) -> str:
        """vLLM's --model for weights in `bucket` (the stack's own cache's name)."""
        return f"s3://{bucket}/{self.prefix}"


def weights_plan(cfg: PlatformConfig, model: Model, staging: Optional[StagingPlan]) -> WeightsPlan:
    if staging is not None:
        bucket = cfg.model_cache.bucket
        return WeightsPlan(WeightsSource.CACHE, bucket, staging.prefix, staging, f"s3://{bucket}/{staging.prefix}" if bucket else None)
    if model.weights_bucket and not cfg.is_simulated(model):
        bucket, prefix = model.weights_bucket
        return WeightsPlan(WeightsSource.S3, bucket, prefix, None, model.model)
    return WeightsPlan(WeightsSource.HUB, None, None, None, model.model)


class ImageRoute(StrEnum):
    # The stack's ECR pull-through cache of Docker Hub, in the cluster's region.
    ECR_CACHE = "ecr-cache"
    # A registry of the user's own (images.registry).
    MIRROR = "mirror"
    # Straight from the image's own registry.
    UPSTREAM = "upstream"


@dataclass(frozen=True)
class ImagePlan:
    # As the config names it.
    reference: str
    route: ImageRoute
    # The path (and tag or digest) below the cache's or mirror's registry; the reference itself upstream.
    path: str

    def pulled_from(self, registry: str) -> str:
        """The reference the pods use, below `registry` (the cache's or the mirror's) unless upstream."""
        return self.reference if self.route is ImageRoute.UPSTREAM else f"{registry}/{self.path}"


def docker_hub_route(cfg: PlatformConfig) -> ImageRoute:
    """Where the stack pulls Docker Hub's images from, the models' and the platform's own alike: the user's
    mirror, else the stack's ECR cache where it makes one, else Docker Hub itself."""
    if cfg.images.registry is not None:
        return ImageRoute.MIRROR
    if cfg.images.docker_hub is not None and cfg.cluster.existing is None:
        return ImageRoute.ECR_CACHE
    return ImageRoute.UPSTREAM


def image_plan(cfg: PlatformConfig, reference: str) -> ImagePlan:
    """A Docker Hub image through the mirror or the stack's cache, where there is one; any other as it is named."""
    hub_path = images.docker_hub_path(reference)
    route = docker_hub_route(cfg)
    if hub_path is None or route is ImageRoute.UPSTREAM:
        return ImagePlan(reference, ImageRoute.UPSTREAM, reference)
    return ImagePlan(reference, route, hub_path)
